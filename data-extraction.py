"""Get the DeepParticle MICRO folder (raw_img/, annotation/) onto disk.

Downloads the archive from figshare (or the Google Drive mirror), unpacks a local archive,
or writes synthetic data. Run with --help for the options.
"""
from microplastics.core.cli import run
from microplastics.data.extraction import main

if __name__ == "__main__":
    run(main)
