"""Experiments whose numbers back claims in docs/ (index: experiments/README.md); run each as
`python -m experiments.NAME` from the repository root."""
