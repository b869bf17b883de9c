"""diffsci.molecules: molecule (RDKit) and protein (biotite) design. Not built yet."""
