using System.IO.Compression;
using System.Text;

namespace OrleansGpt.Training.Data;

/// <summary>One paper from an arXiv Archive TSV file.</summary>
/// <param name="Line">The line its row starts on, for error messages.</param>
public sealed record ArxivPaper(string ArxivId, string Title, string Abstract, string PrimaryCategory, string[] Categories, long Line);

/// <summary>
/// Reads the arXiv Archive TSV (R. S. Geiger, zenodo 2533436) as written by Python's csv/pandas: tab-separated,
/// a header whose first column is the unnamed row index, fields quoted with '"' when they hold a tab, a quote
/// or a line break, and '""' for a quote inside a quoted field. Plain, gzip or xz (detected from the first
/// bytes; the archive itself is distributed as .tsv.xz).
/// </summary>
/// <remarks>Strict where Python is lenient: a character after a closing quote other than a tab or line end, an
/// unterminated quote, or a row with the wrong number of fields fails with the file, the line and the reason,
/// since each of those means the file is not what the rest of the pipeline assumes.</remarks>
public sealed class ArxivTsvReader : IDisposable
{
    /// <summary>Columns the pipeline needs; others are read and ignored.</summary>
    public static readonly string[] RequiredColumns = ["abstract", "arxiv_id", "categories", "primary_cat", "title"];

    private readonly TextReader _reader;
    private readonly string _path;
    private readonly int _columns;
    private readonly int _abstract, _id, _categories, _primary, _title;
    private long _line = 1; // physical line of the next character
    private readonly StringBuilder _field = new();

    public ArxivTsvReader(string path)
    {
        _path = path;
        _reader = Open(path);
        try
        {
            var header = ReadRow() ?? throw Error(1, "the file is empty; expected the arXiv Archive TSV header");
            if (header.Count < 2 || header[0].Length != 0)
                throw Error(1, $"the header must start with an unnamed index column (a leading tab); found '{string.Join("\\t", header.Take(4))}'");
            var index = header.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);
            var missing = RequiredColumns.Where(c => !index.ContainsKey(c)).ToArray();
            if (missing.Length > 0)
                throw Error(1, $"the header lacks column(s) {string.Join(", ", missing)}; found {string.Join(", ", header.Skip(1))}");
            _columns = header.Count;
            (_abstract, _id, _categories, _primary, _title) = (index["abstract"], index["arxiv_id"], index["categories"], index["primary_cat"], index["title"]);
        }
        catch
        {
            _reader.Dispose();
            throw;
        }
    }

    /// <summary>Reads every paper, in file order.</summary>
    public IEnumerable<ArxivPaper> ReadAll()
    {
        while (true)
        {
            long start = _line;
            var row = ReadRow();
            if (row is null)
                yield break;
            if (row.Count == 1 && row[0].Length == 0)
                continue; // a blank line, e.g. a trailing newline
            if (row.Count != _columns)
                throw Error(start, $"the row has {row.Count} fields, the header has {_columns}");
            yield return new ArxivPaper(row[_id].Trim(), row[_title], row[_abstract], row[_primary].Trim(),
                row[_categories].Split([',', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), start);
        }
    }

    /// <summary>One row's fields, or null at the end of the file.</summary>
    private List<string>? ReadRow()
    {
        int c = _reader.Read();
        if (c < 0)
            return null;
        var fields = new List<string>();
        while (true)
        {
            _field.Clear();
            if (c == '"')
            {
                long quoteLine = _line;
                while (true)
                {
                    c = _reader.Read();
                    if (c < 0)
                        throw Error(quoteLine, "a quoted field is never closed (unbalanced '\"')");
                    if (c == '\n') _line++;
                    if (c == '"')
                    {
                        c = _reader.Read();
                        if (c == '"') { _field.Append('"'); continue; }
                        break; // closing quote; c is the character after it
                    }
                    _field.Append((char)c);
                }
                if (c == '\r') c = _reader.Read();
                if (c is not ('\t' or '\n' or -1))
                    throw Error(_line, $"unexpected '{(char)c}' after a closing quote (a quote inside a quoted field must be doubled)");
            }
            else
            {
                while (c is not ('\t' or '\n' or -1))
                {
                    if (c != '\r') _field.Append((char)c);
                    c = _reader.Read();
                }
            }
            fields.Add(_field.ToString());
            if (c == '\t')
            {
                c = _reader.Read();
                continue;
            }
            if (c == '\n') _line++;
            return fields;
        }
    }

    private InvalidDataException Error(long line, string reason) => new($"{_path}:{line}: {reason}");

    private static TextReader Open(string path)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        Span<byte> magic = stackalloc byte[6];
        int n = stream.Read(magic);
        stream.Position = 0;
        if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b)
            return new StreamReader(new GZipStream(stream, CompressionMode.Decompress), Encoding.UTF8, false, 1 << 20);
        if (n >= 6 && magic[0] == 0xFD && magic[1] == (byte)'7' && magic[2] == (byte)'z' && magic[3] == (byte)'X' && magic[4] == (byte)'Z')
            return new StreamReader(new SharpCompress.Compressors.Xz.XZStream(stream), Encoding.UTF8, false, 1 << 20);
        return new StreamReader(stream, Encoding.UTF8, false, 1 << 20);
    }

    public void Dispose() => _reader.Dispose();
}
