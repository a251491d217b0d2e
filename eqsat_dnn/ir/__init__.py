"""The intermediate representation every stage speaks: the op vocabulary (:mod:`.language`,
each op declared once) and the tiny Graph/Node IR (:mod:`.graph`)."""
