"""Thin wrapper: see ``jaxformers/conversion/gpt2_tf.py``; also ``jaxformers convert`` with the same arguments."""

from jaxformers.conversion.gpt2_tf import main

if __name__ == "__main__":
    main()
