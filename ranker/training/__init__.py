"""Fine-tuning the neural models the extractors load: the cross-encoder (:mod:`.crossencoder`), the
bi-encoder (:mod:`.biencoder`) and the training queries an LM writes or titles give (:mod:`.synthetic`).
The ``finetune-ce`` / ``finetune-be`` steps call them; an extractor only loads the model folder they
write (:mod:`features.model_folders` reads what a folder says about its training)."""
