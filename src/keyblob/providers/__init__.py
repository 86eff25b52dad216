"""Where keys live: the software provider (a home folder) and, later, PKCS#11 tokens.

The only code that touches private key material; it never parses a blob.
"""
