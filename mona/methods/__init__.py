"""Methods that belong to the MONA paper itself (MONA, GLCon)."""
