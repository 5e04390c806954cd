"""Every stage script's --help: each default printed once, none for a required option, and examples."""
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))


def help_text(script: str, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def option_entries(text: str) -> dict[str, str]:
    """'--flag' -> its whole entry (flag line and wrapped help lines) from the options section."""
    entries: dict[str, str] = {}
    current = None
    for line in text.split("\nexamples:")[0].splitlines():
        match = re.match(r"\s{2}(-\w|--[\w-]+)", line)
        if match:
            current = re.findall(r"--[\w-]+", line)[0] if "--" in line else match.group(1)
            entries[current] = line
        elif current and line.startswith(" " * 8):
            entries[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return entries


def required_options(text: str) -> list[str]:
    """Options the usage lines show outside brackets, the required ones."""
    usage = text.split("\n\n")[0]
    depth, outside = 0, []
    for token in re.findall(r"[\[\]]|[^\s\[\]]+", usage):
        depth += {"[": 1, "]": -1}.get(token, 0)
        if depth == 0 and token.startswith("--"):
            outside.append(token)
    return outside


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_each_default_once_and_examples(script, monkeypatch, capsys):
    text = help_text(script, monkeypatch, capsys)
    entries = option_entries(text)
    assert entries, text
    for flag, entry in entries.items():
        assert entry.count("default:") <= 1, entry
        assert "(default: None)" not in entry and "default: []" not in entry, entry
    for flag in required_options(text):
        assert "default" not in entries[flag], entries[flag]
    examples = [line.strip() for line in text.split("\nexamples:\n", 1)[-1].splitlines() if line.strip()]
    assert "\nexamples:\n" in text and len(examples) >= 2, text
    assert all(e.startswith(f"python {script}") for e in examples), examples


def test_defaults_come_from_the_parser(monkeypatch, capsys):
    entries = option_entries(help_text("vgg16.py", monkeypatch, capsys))
    assert "default: 42" in entries["--seed"]                 # an option without help text still shows it
    assert entries["--image-size"].count("default") == 1      # its own words, not a second "(default: None)"
    grad_cam_help = help_text("grad-cam.py", monkeypatch, capsys)
    grad_cam = option_entries(grad_cam_help)
    assert "default: gradcam)" in grad_cam["--method"]        # a list default as one types it
    assert "--model" in required_options(grad_cam_help) and "default" not in grad_cam["--model"]
