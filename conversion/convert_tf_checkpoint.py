"""Thin wrapper: see ``jaxformers/conversion/bert_tf.py``; also ``jaxformers convert`` with the same arguments."""

from jaxformers.conversion.bert_tf import main

if __name__ == "__main__":
    main()
