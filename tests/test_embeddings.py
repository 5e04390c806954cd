"""The frozen-backbone fast path: cached embeddings equal live backbone outputs; SMOTE on embeddings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from microplastics.core import fileio
from microplastics.deep.checkpoint import load_classifier
from microplastics.data.dataset import load_manifest, manifest_digest, split_frame
from microplastics.deep.embeddings import CropDataset, cache_key
from microplastics.core.cli import UserError
from microplastics.deep.models import IMAGENET_MEAN, IMAGENET_STD
from microplastics.deep.precision import cpu_supports_bf16, precision_name, resolve_precision
from microplastics.deep.stage import main, smote_views
from microplastics.deep.transforms import EvalPreset, TrainPreset


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


FLAGS = ["--arch", "resnet18", "--weights", "none", "--image-size", "32", "--epochs", "2", "--workers", "0",
         "--aug-views", "2", "--precision", "fp32"]  # fp32: the cache must equal the live fp32 model exactly


@pytest.fixture(scope="module")
def head_run(processed_dir, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("emb_results")
    torch.set_num_threads(2)
    main(["--data", str(processed_dir), "--results", str(results), *FLAGS])
    return results


def test_cached_embeddings_give_the_live_backbone_logits(head_run, processed_dir):
    (cache_file,) = (head_run / ".embeddings").glob("resnet18-32px-*.pt")
    cache = torch.load(cache_file, weights_only=True)
    assert cache["train"].shape[:2] == (3, 28) and cache["test"].shape == (12, 512)
    clf = load_classifier(head_run / "resnet18")
    manifest = load_manifest(processed_dir)
    train, test = split_frame(manifest, "train"), split_frame(manifest, "test")
    with torch.no_grad():
        # the head on cached test embeddings == the whole model run live on the same crops
        live_x = torch.stack([CropDataset(processed_dir, test["path"], np.zeros(len(test)), EvalPreset(32))[i][0]
                              for i in range(len(test))])
        assert torch.allclose(clf.model.head(cache["test"]), clf.model(live_x), atol=1e-5)
        # an augmented view is reproduced exactly from (seed, view, crop index)
        view2 = CropDataset(processed_dir, train["path"], np.zeros(len(train)), TrainPreset(32), seed=42, stream=2)
        live_aug = torch.stack([view2[i][0] for i in range(5)])
        assert torch.allclose(clf.model.backbone(live_aug), cache["train"][2, :5], atol=1e-5)
        assert not torch.allclose(cache["train"][1, :5], cache["train"][2, :5])  # views differ


def test_cache_is_reused_and_keyed_on_settings(head_run, processed_dir):
    first = fileio.read_json(head_run / "resnet18" / "metrics.json")
    assert first["timing"]["embedding_cached"] is False and first["timing"]["embedding_images"] == 28 * 3 + 8 + 12
    main(["--data", str(processed_dir), "--results", str(head_run), *FLAGS])
    again = fileio.read_json(head_run / "resnet18" / "metrics.json")
    assert again["timing"]["embedding_cached"] is True
    assert again["accuracy"] == first["accuracy"] and again["per_class"] == first["per_class"]
    main(["--data", str(processed_dir), "--results", str(head_run), *FLAGS, "--aug-views", "1"])
    assert len(list((head_run / ".embeddings").glob("resnet18-32px-*.pt"))) == 2


def test_smote_interpolates_between_same_class_crops():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 10 + [1] * 4)
    views = torch.from_numpy(rng.normal(size=(2, 14, 6)).astype(np.float32))
    views[:, 10:] += 5.0  # class 1 lies far from class 0
    x, y = smote_views(views, labels, seed=0)
    assert np.bincount(y).tolist() == [20, 20]  # each view balanced to 10 + 10
    assert torch.equal(x[:14], views[0])  # real crops kept, synthetic ones appended
    for v, block in enumerate((x[14:20], x[34:40])):
        minority = views[v, 10:].numpy()
        for s in block.numpy():  # on a segment between two class-1 crops of the same view
            best = min(np.linalg.norm(s - (a + np.clip(np.dot(s - a, b - a) / np.dot(b - a, b - a), 0, 1) * (b - a)))
                       for i, a in enumerate(minority) for j, b in enumerate(minority) if i != j)
            assert best < 1e-4


def test_bf16_embeddings_agree_with_fp32_and_are_cached_apart(processed_dir, tmp_path):
    results = tmp_path / "results"
    flags = ["--data", str(processed_dir), "--results", str(results), "--arch", "resnet18", "--weights", "none",
             "--image-size", "32", "--epochs", "1", "--workers", "0", "--aug-views", "0"]
    main([*flags, "--precision", "fp32"])
    (fp32_file,) = (results / ".embeddings").glob("resnet18-32px-*.pt")
    # fp32 keeps the key of caches made before --precision existed, so they are still reused
    old_key = cache_key(manifest=manifest_digest(processed_dir), arch="resnet18", weights="none", image_size=32,
                        views=0, seed=42, dtype="float32", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    assert fp32_file.name == f"resnet18-32px-{old_key}.pt"
    assert fileio.read_json(results / "resnet18" / "metrics.json")["precision"] == "fp32"
    main([*flags, "--precision", "bf16"])
    (bf16_file,) = set((results / ".embeddings").glob("resnet18-32px-*.pt")) - {fp32_file}  # a key of its own
    assert fileio.read_json(results / "resnet18" / "config.json")["precision_used"] == "bf16"
    assert fileio.read_json(results / "resnet18" / "metrics.json")["precision"] == "bf16"
    exact = torch.load(fp32_file, weights_only=True)
    rounded = torch.load(bf16_file, weights_only=True)
    for split in ("train", "val", "test"):
        a, b = exact[split].flatten(1), rounded[split].flatten(1)
        assert not torch.equal(a, b)  # bf16 really ran
        # stated tolerance: per crop, the error is within 2 % of the embedding's norm, direction within 0.9995
        assert ((a - b).norm(dim=1) <= 0.02 * a.norm(dim=1)).all()
        assert (torch.nn.functional.cosine_similarity(a, b, dim=1) >= 0.9995).all()
    # a later stage runs the backbone as training did, unless told otherwise
    assert load_classifier(results / "resnet18").amp_dtype == torch.bfloat16
    assert load_classifier(results / "resnet18", precision="fp32").amp_dtype is None


def test_precision_choices_resolve_per_device_and_pass():
    cpu = torch.device("cpu")
    native = torch.bfloat16 if cpu_supports_bf16() else None
    assert resolve_precision("auto", cpu, frozen=True) == native  # embedding pass, prediction
    assert resolve_precision("auto", cpu, frozen=False) is None  # training on a CPU stays fp32
    assert resolve_precision("bf16", cpu, frozen=False) == torch.bfloat16
    assert resolve_precision("fp32", cpu) is None
    with pytest.raises(UserError, match="--precision bf16"):
        resolve_precision("bf16", torch.device("mps"))
    assert precision_name(None) == "fp32" and precision_name(torch.bfloat16) == "bf16"
