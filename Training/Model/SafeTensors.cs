// The safetensors format (github.com/huggingface/safetensors): an 8-byte little-endian header length, a
// JSON header mapping each tensor name to {dtype, shape, data_offsets: [begin, end)} (offsets relative to the
// end of the header) plus an optional "__metadata__" string map, then the raw little-endian tensor bytes.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Model;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">The key, e.g. transformer.h.0.attn.c_attn.weight.</param>
/// <param name="Dtype">The safetensors dtype name (F32, BF16, F16, ...).</param>
/// <param name="Shape">The dimensions.</param>
/// <param name="Begin">First byte, relative to the data section.</param>
/// <param name="End">One past the last byte.</param>
public sealed record SafeTensorEntry(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    /// <summary>The shape as Python would print it, for error messages.</summary>
    public string ShapeText => $"[{string.Join(", ", Shape)}]";
}

/// <summary>Reads tensors from a .safetensors file one at a time, so a large checkpoint is never held twice.</summary>
public sealed class SafeTensorsReader : IDisposable
{
    // A header larger than this is not a GPT-2 checkpoint; refuse it before allocating.
    private const long MaxHeaderBytes = 100_000_000;
    private readonly FileStream _stream;
    private readonly long _dataStart;

    public SafeTensorsReader(string path)
    {
        Path = path;
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            Span<byte> lengthBytes = stackalloc byte[8];
            if (_stream.Read(lengthBytes) != 8)
                throw new InvalidDataException($"{path}: too short to be a safetensors file");
            long headerLength = BinaryPrimitives.ReadInt64LittleEndian(lengthBytes);
            if (headerLength <= 0 || headerLength > MaxHeaderBytes || headerLength > _stream.Length - 8)
                throw new InvalidDataException($"{path}: header length {headerLength} is not plausible for a file of {_stream.Length} bytes");
            var header = new byte[headerLength];
            _stream.ReadExactly(header);
            _dataStart = 8 + headerLength;

            JsonObject root;
            try
            {
                root = JsonNode.Parse(header)?.AsObject() ?? throw new InvalidDataException("empty header");
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}: the safetensors header is not valid JSON: {e.Message}", e);
            }

            var entries = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
            foreach (var (name, node) in root)
            {
                if (name == "__metadata__")
                {
                    Metadata = node?.AsObject().ToDictionary(p => p.Key, p => p.Value?.GetValue<string>() ?? "") ?? [];
                    continue;
                }
                var o = node?.AsObject() ?? throw new InvalidDataException($"{path}: entry {name} is not an object");
                var offsets = o["data_offsets"]!.AsArray();
                var entry = new SafeTensorEntry(name, o["dtype"]!.GetValue<string>(),
                    o["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray(),
                    offsets[0]!.GetValue<long>(), offsets[1]!.GetValue<long>());
                long expected = entry.Shape.Aggregate(1L, (a, d) => a * d) * ElementSize(entry.Dtype, path, name);
                if (entry.End - entry.Begin != expected || entry.Begin < 0 || _dataStart + entry.End > _stream.Length)
                    throw new InvalidDataException($"{path}: {name} ({entry.Dtype} {entry.ShapeText}) has data offsets [{entry.Begin}, {entry.End}) that do not fit its shape or the file");
                entries.Add(name, entry);
            }
            Entries = entries;
        }
        catch
        {
            _stream.Dispose();
            throw;
        }
    }

    /// <summary>The file being read.</summary>
    public string Path { get; }

    /// <summary>Every tensor in the file, by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; }

    /// <summary>The header's "__metadata__" map (Hugging Face writes {"format": "pt"}).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();

    /// <summary>Reads one tensor into a new CPU tensor of the file's dtype.</summary>
    public Tensor Read(SafeTensorEntry entry)
    {
        var tensor = empty(entry.Shape, ToScalarType(entry.Dtype, Path, entry.Name));
        var bytes = new byte[entry.End - entry.Begin];
        _stream.Position = _dataStart + entry.Begin;
        _stream.ReadExactly(bytes);
        tensor.bytes = bytes; // raw little-endian bytes, reinterpreted, not converted
        return tensor;
    }

    public void Dispose() => _stream.Dispose();

    internal static ScalarType ToScalarType(string dtype, string path, string name) => dtype switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new InvalidDataException($"{path}: {name} has dtype {dtype}, which this reader does not support"),
    };

    internal static string ToDtypeName(ScalarType type) => type switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"safetensors has no name for {type}"),
    };

    private static long ElementSize(string dtype, string path, string name) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" => 2,
        "U8" or "BOOL" => 1,
        _ => throw new InvalidDataException($"{path}: {name} has dtype {dtype}, which this reader does not support"),
    };
}

/// <summary>Writes named tensors as one .safetensors file.</summary>
public static class SafeTensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> (in the given order) to <paramref name="path"/>.</summary>
    /// <param name="metadata">The "__metadata__" map; Hugging Face's loader expects {"format": "pt"}.</param>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
            header["__metadata__"] = new JsonObject(metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        long offset = 0;
        foreach (var (name, tensor) in list)
        {
            long size = tensor.NumberOfElements * tensor.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = SafeTensorsReader.ToDtypeName(tensor.dtype),
                ["shape"] = new JsonArray(tensor.shape.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(JsonValue.Create(offset), JsonValue.Create(offset + size)),
            };
            offset += size;
        }

        // The format pads the header with spaces to a multiple of 8 so the data section is aligned.
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (headerBytes.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        Span<byte> lengthBytes = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(lengthBytes, padded);
        stream.Write(lengthBytes);
        stream.Write(headerBytes);
        for (int i = headerBytes.Length; i < padded; i++)
            stream.WriteByte((byte)' ');
        foreach (var (_, tensor) in list)
        {
            using var contiguous = tensor.detach().cpu().contiguous();
            stream.Write(contiguous.bytes);
        }
        stream.Flush(flushToDisk: true);
    }
}
