using System.Buffers.Binary;
using System.Text.Json;

namespace UioLlm.Model.Formats;

/// <summary>Element types of a safetensors file. Only F32, F16 and BF16 are converted to float.</summary>
public enum SafetensorsDType
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    BOOL,
    F8_E4M3,
    F8_E5M2,
}

/// <summary>One tensor of a safetensors file: <see cref="Begin"/> and <see cref="End"/> are relative to the data section.</summary>
public sealed record SafetensorsTensorInfo(string Name, SafetensorsDType DType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public string ShapeString => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A safetensors file: an 8-byte little-endian header length, a JSON header mapping each tensor name to
/// dtype, shape and data_offsets (plus an optional string map "__metadata__"), then the tensor bytes. The header
/// is validated completely on <see cref="Read"/>; tensor data is read on demand.
/// </summary>
public sealed class SafetensorsFile
{
    /// <summary>The same cap the reference implementation applies to the JSON header.</summary>
    private const long MaxHeaderBytes = 100_000_000;
    private const string MetadataKey = "__metadata__";

    /// <summary>The dtype strings of the format: exactly the enum member names.</summary>
    private static readonly Dictionary<string, SafetensorsDType> DTypesByName =
        Enum.GetValues<SafetensorsDType>().ToDictionary(d => d.ToString(), StringComparer.Ordinal);

    private readonly Dictionary<string, SafetensorsTensorInfo> byName;

    private SafetensorsFile(string path, long dataOffset, Dictionary<string, string> metadata, List<SafetensorsTensorInfo> tensors)
    {
        Path = path;
        DataOffset = dataOffset;
        Metadata = metadata;
        Tensors = tensors;
        byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path { get; }
    /// <summary>Absolute file offset of the data section (8 + header length).</summary>
    public long DataOffset { get; }
    /// <summary>The "__metadata__" string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Tensors in header order.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    /// <summary>The element size of <paramref name="dtype"/> in bytes.</summary>
    public static int ElementSize(SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F64 or SafetensorsDType.I64 or SafetensorsDType.U64 => 8,
        SafetensorsDType.F32 or SafetensorsDType.I32 or SafetensorsDType.U32 => 4,
        SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.I16 or SafetensorsDType.U16 => 2,
        _ => 1,
    };

    /// <summary>Parses and validates the header of <paramref name="path"/>.</summary>
    /// <exception cref="ModelFormatException">The header length, JSON, a dtype, shape or offset is invalid.</exception>
    public static SafetensorsFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file '{path}' does not exist", path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        long fileLength = stream.Length;
        if (fileLength < 8) throw new ModelFormatException(path, $"safetensors needs an 8-byte header length, the file has {fileLength} bytes");

        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength < 2 || headerLength > MaxHeaderBytes || headerLength > (ulong)(fileLength - 8))
            throw new ModelFormatException(path, $"safetensors header length is {headerLength}, but it must be between 2 and min({MaxHeaderBytes}, file length {fileLength} - 8)");

        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataOffset = 8 + (long)headerLength;
        var (metadata, tensors) = ParseHeader(path, header, fileLength - dataOffset);
        return new SafetensorsFile(path, dataOffset, metadata, tensors);
    }

    private static (Dictionary<string, string>, List<SafetensorsTensorInfo>) ParseHeader(string path, byte[] header, long dataLength)
    {
        Utf8Text.Require(header, path, "the safetensors header");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"safetensors header is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(path, $"safetensors header is a JSON {doc.RootElement.ValueKind}, expected an object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var tensors = new List<SafetensorsTensorInfo>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (!names.Add(property.Name)) throw new ModelFormatException(path, $"safetensors header lists '{property.Name}' twice");
                if (property.Name == MetadataKey) ReadMetadata(path, property.Value, metadata);
                else tensors.Add(ParseTensor(path, property.Name, property.Value));
            }
            CheckLayout(path, tensors, dataLength);
            return (metadata, tensors);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, $"safetensors '{MetadataKey}' is a JSON {value.ValueKind}, expected an object of strings");
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new ModelFormatException(path, $"safetensors '{MetadataKey}' entry '{entry.Name}' is a JSON {entry.Value.ValueKind}, expected a string");
            metadata[entry.Name] = entry.Value.GetString()!;
        }
    }

    private static SafetensorsTensorInfo ParseTensor(string path, string name, JsonElement value)
    {
        ModelFormatException Bad(string what) => new(path, $"tensor '{name}': {what}");
        if (value.ValueKind != JsonValueKind.Object) throw Bad($"entry is a JSON {value.ValueKind}, expected an object");
        if (!value.TryGetProperty("dtype", out var dtypeJson) || dtypeJson.ValueKind != JsonValueKind.String)
            throw Bad("'dtype' is missing or not a string");
        string dtypeText = dtypeJson.GetString()!;
        if (!DTypesByName.TryGetValue(dtypeText, out var dtype))
            throw Bad($"dtype '{dtypeText}' is unknown (expected one of {string.Join(", ", DTypesByName.Keys)})");
        long[] shape = ReadLongs(value, "shape", Bad);
        long[] offsets = ReadLongs(value, "data_offsets", Bad);
        if (offsets.Length != 2) throw Bad($"'data_offsets' has {offsets.Length} entries, expected [begin, end]");

        long expectedBytes;
        try
        {
            expectedBytes = ElementSize(dtype);
            foreach (long d in shape) expectedBytes = checked(expectedBytes * d);
        }
        catch (OverflowException)
        {
            throw Bad($"shape [{string.Join(", ", shape)}] is too large");
        }
        if (offsets[1] < offsets[0] || offsets[1] - offsets[0] != expectedBytes)
            throw Bad($"data_offsets [{offsets[0]}, {offsets[1]}] span {offsets[1] - offsets[0]} bytes, but {dtype} [{string.Join(", ", shape)}] needs {expectedBytes}");
        return new SafetensorsTensorInfo(name, dtype, shape, offsets[0], offsets[1]);
    }

    /// <summary>A JSON array of non-negative integers.</summary>
    private static long[] ReadLongs(JsonElement value, string key, Func<string, ModelFormatException> bad)
    {
        if (!value.TryGetProperty(key, out var array) || array.ValueKind != JsonValueKind.Array)
            throw bad($"'{key}' is missing or not an array");
        var result = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long v) || v < 0)
                throw bad($"'{key}' element {i} is {item.GetRawText()}, expected a non-negative integer");
            result[i++] = v;
        }
        return result;
    }

    /// <summary>The tensors must tile the data section exactly: in range, without gaps or overlaps.</summary>
    private static void CheckLayout(string path, List<SafetensorsTensorInfo> tensors, long dataLength)
    {
        long expectedBegin = 0;
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.End > dataLength)
                throw new ModelFormatException(path, $"tensor '{t.Name}' data_offsets [{t.Begin}, {t.End}] extend past the data section ({dataLength} bytes)");
            if (t.Begin != expectedBegin)
                throw new ModelFormatException(path, $"tensor '{t.Name}' begins at data offset {t.Begin}, expected {expectedBegin}: tensors must be contiguous and must not overlap");
            expectedBegin = t.End;
        }
        if (expectedBegin != dataLength)
            throw new ModelFormatException(path, $"tensors cover {expectedBegin} bytes but the data section has {dataLength}");
    }

    /// <summary>The tensor called <paramref name="name"/>, or null.</summary>
    public SafetensorsTensorInfo? Find(string name) => byName.GetValueOrDefault(name);

    /// <summary>The elements of an F32, F16 or BF16 tensor as float32, row-major.</summary>
    /// <exception cref="ModelFormatException">The dtype cannot be converted to float.</exception>
    public float[] ReadTensor(SafetensorsTensorInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (!byName.TryGetValue(info.Name, out var own) || own.Begin != info.Begin || own.End != info.End || own.DType != info.DType)
            throw new ArgumentException($"tensor '{info.Name}' is not a tensor of {Path}", nameof(info));
        var encoding = info.DType switch
        {
            SafetensorsDType.F32 => FloatEncoding.F32,
            SafetensorsDType.F16 => FloatEncoding.F16,
            SafetensorsDType.BF16 => FloatEncoding.BF16,
            _ => throw new ModelFormatException(Path, $"tensor '{info.Name}' {info.ShapeString}: dtype {info.DType} is not supported (readable dtypes: F32, F16, BF16)"),
        };
        return FloatFileReader.Read(Path, info.Name, DataOffset + info.Begin, info.ElementCount, encoding);
    }
}
