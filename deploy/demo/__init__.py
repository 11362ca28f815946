"""`flywheel demo`: the whole continuous-learning loop on one machine.

- `plan`: what a run does (quick or full) and the settings it runs the services with;
- `users`: the corpus split into old and new topics, and simulated users' feedback;
- `traffic`: the simulated users, through the gateway and the ingest API;
- `accounting`: every replayed event found as curated or quarantined;
- `versions`: perplexity of each served version on old and new topics;
- `report`: the summary table and the HTML report with its plots and queries;
- `run`: the phases, in order, within the time budget.
"""
