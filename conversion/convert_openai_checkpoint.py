"""Thin wrapper: see ``jaxformers/conversion/openai.py``; also ``jaxformers convert`` with the same arguments."""

from jaxformers.conversion.openai import main

if __name__ == "__main__":
    main()
