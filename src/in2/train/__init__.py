"""Supervised fine-tuning on IN2 data with TRL's SFTTrainer: arguments, model loading, cards, publishing."""
