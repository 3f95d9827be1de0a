"""Readers: every supported input format -> canonical Arrow record batches.

```python
from ingest.readers import open_inputs, sniff_format, FORMATS
reader = open_inputs(paths, format="auto", mapping=None, dead_letter=None, batch_size=65536)
for batch in reader:        # pyarrow.RecordBatch in FLOW_SCHEMA or TX_SCHEMA
    ...
reader.stats                # ReadStats: rows_ok, malformed (reason -> n), per_file
reader.kind                 # "flows" | "transactions"
```
``row`` numbers the good records 0, 1, 2, ... across all inputs in the order given.
Malformed records never stop a read: they are counted by reason, the first few
logged, and all written to the dead-letter file (``ingest.deadletter``).

Bad files never stop a read either. An input that cannot be read at all with its chosen or
sniffed format (binary data, an unknown layout, a truncated Parquet footer, a corrupt archive,
no permission) is one ``unreadable_file`` entry (counted, logged, dead-lettered under its own
path; ``FileStats.error`` says why); a file whose read fails part-way is one ``file_error``
entry after the records it gave. The other inputs are read as usual. Only a wrong call (an
input that does not exist, a directory, an unknown format name, inputs of two kinds) raises at
:func:`open_inputs`. When a whole read gave no record at all but rejected something, iterating
ends by raising :class:`NothingReadable` (unless ``allow_nothing=True``).

Read-ahead: with several inputs, each file is read (parsed and normalised) by its own
"read-ahead" thread into a small queue, and up to ``read_ahead`` files after the current
one are read while the current one's batches are yielded (pyarrow releases the GIL). The
consumer still takes the files one after another: rows, batches, stats, dead letters and
log lines come out exactly as in a serial read, because a file read ahead keeps what it
would write to shared state (see :class:`_AheadContext`) until the consumer reaches it.
(Only ``FileStats.seconds`` differs: it counts from the start of a file's read, early or not.)
Captures (pcap: nfstream forks) are never read beside a thread. ``read_ahead=0`` (or
``InputReader.READ_AHEAD = 0``) reads serially, in the caller's thread.

One idea per module here: :mod:`.formats` (the format table and sniffing), :mod:`.readahead` (reading a
file ahead in a thread), :mod:`.reader` (:class:`InputReader`, :func:`open_inputs`); :mod:`.base` (file
context and statistics), :mod:`.sources` (inputs and archives) and one module per format.
"""
from __future__ import annotations

from ingest.readers.base import FileStats, ReadStats
from ingest.readers.formats import _ALIASES, FORMATS, FormatInfo, looks_binary, sniff_format, sniff_head
from ingest.readers.jsonl import records_to_batch
from ingest.readers.readahead import AHEAD_PENDING, AHEAD_TABLES, SERIAL_FORMATS
from ingest.readers.reader import UNREADABLE, InputReader, NothingReadable, open_inputs

__all__ = ["open_inputs", "sniff_format", "FORMATS", "ReadStats", "FileStats", "records_to_batch",
           "InputReader", "FormatInfo", "NothingReadable", "UNREADABLE", "AHEAD_PENDING", "AHEAD_TABLES",
           "SERIAL_FORMATS", "looks_binary", "sniff_head", "_ALIASES"]
