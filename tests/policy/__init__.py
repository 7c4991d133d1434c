"""The policy pack under the real pulumi-policy, in the pack's own virtualenv
(`pack_check.py`), fed the recorded plans (`plans.py`) and their mutations."""
