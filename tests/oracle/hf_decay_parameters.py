"""HF Trainer's weight-decay split of a model's parameters: the oracle for qtune's applies_weight_decay.

Usage: hf_decay_parameters.py MODEL_DIR OUT.json
Builds the model from MODEL_DIR/config.json (random weights: only the names matter) and writes
{"parameters": [every name], "decay": Trainer.get_decay_parameter_names(model)}.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")
from transformers import AutoConfig, AutoModelForCausalLM, Trainer  # noqa: E402


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    # get_decay_parameter_names does not read `self` (transformers 4.4x-5.x): no TrainingArguments are needed.
    decay = Trainer.get_decay_parameter_names(None, model)
    with open(out, "w") as f:
        json.dump({"parameters": [n for n, _ in model.named_parameters()], "decay": decay}, f)


if __name__ == "__main__":
    main()
