"""``chatbus train``: LoRA fine-tuning of the served model into a merged candidate folder.

One job per module:

- :mod:`.source`: where a fine-tuning set lives (a JSONL file, or a folder with ``train.jsonl``,
  ``validation.jsonl`` and a data card);
- :mod:`.chat_jsonl`: reading OpenAI's chat fine-tuning JSONL into conversations;
- :mod:`.examples`: conversations into token ids, with labels on the assistant's tokens alone;
- :mod:`.base_model`: which model a run starts from, loaded from its folder;
- :mod:`.lora`: the training loop (peft LoRA, AdamW), validation loss, the merge;
- :mod:`.loss_curve`: ``loss.csv`` and ``loss.png``;
- :mod:`.model_card`: ``training.json``, the model card and the data card beside it;
- :mod:`.run`: one run, start to end, installed atomically.

torch, transformers, peft and matplotlib are imported when a run needs them, and this package
imports nothing: the command line reads :mod:`.config` for its defaults and starts at once. The
entry point is :func:`.run.finetune` with a :class:`.config.TrainingRequest`.
"""
