"""Teacher-written training questions from the user's documents: chunks drawn across documents and
sections (``select``), the teacher's writing instructions and the reading of what it wrote
(``write``), and the quality gate every candidate passes before it reaches the prompt pool (``gate``)."""
