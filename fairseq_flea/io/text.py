"""Reading the project's text inputs (manifests, label files, corpus CSVs, shard lengths):
UTF-8, with an error that names the file and line when it is something else."""

from typing import List

from fairseq_flea.io.errors import FleaInputError


def read_text(path: str) -> str:
    """The whole file decoded as UTF-8."""
    with open(path, "rb") as text_file:
        data = text_file.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise FleaInputError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None


def read_text_lines(path: str) -> List[str]:
    """The file's lines, without line ends, decoded as UTF-8."""
    return read_text(path).splitlines()
