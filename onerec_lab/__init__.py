"""onerec-lab: the command line and the end-to-end jobs that front envs/, policies/,
rewards/, trainers/ and benchmarks/."""
