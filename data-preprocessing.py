"""Cut the annotated particles out of the photos and split them: MICRO/ -> processed_MICRO/.

Reads a DeepParticle folder (raw_img/ + annotation/<photo>.tsv) or a YOLO export
(images/ + labels/ + data.yaml), writes {train,val,test}/<class>/<crop>.png with
manifest.csv and summary.json. Run with --help for the options; see
docs/data-preprocessing.md for details.
"""
from microplastics.core.cli import run
from microplastics.data.preprocessing import main

if __name__ == "__main__":
    run(main)
