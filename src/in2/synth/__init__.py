"""The synthesis stage, in flow order: corpus -> segment -> qa -> assemble -> mixture -> dataset (+ card);
decontam keeps evaluation texts out; pipeline runs it (`in2 synth`, `in2 merge`, the dry run)."""
