"""The suite kinds (bench/kinds.py): lens finding, lens modeling, photo-z and the design study,
one module each."""
