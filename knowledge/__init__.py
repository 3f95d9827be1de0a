"""Attack knowledge graph (ATT&CK, CAPEC, CWE, D3FEND), extractors, knowledge features, explanations."""
