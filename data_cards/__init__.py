"""The data card template (in2_dataset.md.j2), kept at the top of the repository (src/in2/data_cards links
here) and shipped inside the wheel as this package's data; in2.synth.card renders it into every dataset
folder's README.md."""
