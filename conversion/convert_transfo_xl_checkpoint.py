"""Thin wrapper: see ``jaxformers/conversion/transfo_xl.py``; also ``jaxformers convert`` with the same arguments."""

from jaxformers.conversion.transfo_xl import main

if __name__ == "__main__":
    main()
