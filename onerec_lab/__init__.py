"""onerec-lab: the experiment layer (`onerec_lab.experiment`: the pipeline as a library, its
registries and plugins) and the `onerec-lab` command line (`onerec_lab.commands`, thin
clients of that layer) over envs/, policies/, rewards/ and trainers/."""
