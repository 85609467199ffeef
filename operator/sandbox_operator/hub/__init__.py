"""The only code that talks to the Hugging Face Hub: client, gate, listing, edge probe, health, prices."""
