"""Convert a Google BERT TensorFlow checkpoint to jaxformers (and optionally PyTorch) files.

    python conversion/convert_tf_checkpoint.py --tf_checkpoint_path uncased_L-12_H-768_A-12/bert_model.ckpt \
        --bert_config_file uncased_L-12_H-768_A-12/bert_config.json --output_dir bert-base-uncased --pytorch

Same as ``jaxformers convert bert-tf ...``. Needs tensorflow (``pip install 'jaxformers[tf]'``).
"""

import argparse

from jaxformers.conversion import add_bert_tf_arguments, run_bert_tf

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bert_tf_arguments(parser)
    run_bert_tf(parser.parse_args())
