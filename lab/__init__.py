"""The dunning policy lab: run the real subscription workflow for a simulated population on
Temporal's time-skipping server, and compare dunning policies before they reach a customer."""
