#!/usr/bin/env python3
"""Validates each <AuditMessage> of `custos audit export --xml` (read from the
file given, or stdin) against the DICOM Audit Message Schema (PS3.15 A.5.1,
tests/data/dicom-audit-message.rnc, RELAX NG compact, converted with rnc2rng
and checked with lxml). Prints one JSON document: the number of messages and
the first errors."""
import json
import sys
from pathlib import Path

import rnc2rng
from lxml import etree

SCHEMA = Path(__file__).resolve().parent.parent / "data" / "dicom-audit-message.rnc"


def main():
    # The standard places "##" documentation comments after the values they
    # describe, which rnc2rng's grammar does not allow; as plain comments
    # they mean the same to a validator.
    rnc = SCHEMA.read_text().replace("##", "#")
    rng = rnc2rng.dumps(rnc2rng.loads(rnc))
    schema = etree.RelaxNG(etree.fromstring(rng.encode()))
    data = Path(sys.argv[1]).read_bytes() if len(sys.argv) > 1 else sys.stdin.buffer.read()
    root = etree.fromstring(data)
    messages = [root] if root.tag == "AuditMessage" else list(root.iter("AuditMessage"))
    invalid = []
    for i, m in enumerate(messages):
        if not schema.validate(etree.ElementTree(m)):
            invalid.append({"index": i, "error": str(schema.error_log.last_error),
                            "message": etree.tostring(m).decode()[:600]})
    print(json.dumps({"messages": len(messages), "invalid": invalid[:5], "invalid_count": len(invalid)}))


if __name__ == "__main__":
    main()
