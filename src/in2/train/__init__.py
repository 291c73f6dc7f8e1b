"""Supervised fine-tuning on IN2 data with TRL's SFTTrainer: arguments, model loading, cards, publishing."""

HELP = "fine-tune on an IN2 dataset with TRL's SFTTrainer, from a training recipe"
"""`in2 train`'s line in `in2 --help` (in2.cli names the command without importing TRL)."""
