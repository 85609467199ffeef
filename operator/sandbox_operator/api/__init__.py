"""Kinds and the CRD generated from them."""
