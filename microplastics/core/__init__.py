"""Shared helpers every part uses: the command-line layer, atomic file writing, image reading,
figure saving."""
