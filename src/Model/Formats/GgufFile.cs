using System.Numerics;
using UioLlm.Kernels.Quantization;

namespace UioLlm.Model.Formats;

/// <summary>
/// A GGUF (v2 or v3) container: metadata key/values and tensor descriptors read from the header; tensor data
/// is read on demand with <see cref="ReadTensor"/>. Every count, length and offset is checked against the
/// file length before anything is allocated.
/// </summary>
public sealed class GgufFile
{
    private const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    private const int DefaultAlignment = 32;
    private const int MaxDims = 4;
    private const string AlignmentKey = "general.alignment";

    private readonly Dictionary<string, GgufTensorInfo> tensorsByName;

    private GgufFile(string path, uint version, int alignment, long dataOffset, Dictionary<string, object> metadata, List<GgufTensorInfo> tensors)
    {
        Path = path;
        Version = version;
        Alignment = alignment;
        DataOffset = dataOffset;
        Metadata = metadata;
        Tensors = tensors;
        tensorsByName = tensors.ToDictionary(t => t.Name);
    }

    /// <summary>The file that was read.</summary>
    public string Path { get; }
    /// <summary>Format version (2 or 3).</summary>
    public uint Version { get; }
    /// <summary>Alignment of tensor data (general.alignment, default 32).</summary>
    public int Alignment { get; }
    /// <summary>Absolute offset of the tensor data section.</summary>
    public long DataOffset { get; }
    /// <summary>Metadata: scalars as CLR scalars, arrays as typed CLR arrays (nested arrays as object[]).</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }
    /// <summary>Tensor descriptors in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }

    /// <summary>Parses the header of the GGUF file at <paramref name="path"/>.</summary>
    /// <exception cref="ModelFormatException">The file is not a valid GGUF v2/v3 file.</exception>
    public static GgufFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"GGUF file '{path}' does not exist", path);
        using var r = new GgufHeaderReader(path);

        uint magic = r.ReadUInt32("GGUF magic");
        if (magic != Magic) throw r.Error($"not a GGUF file: magic is 0x{magic:X8}, expected 0x{Magic:X8} (\"GGUF\")");
        uint version = r.ReadUInt32("GGUF version");
        if (version == 1) throw r.Error("GGUF version 1 (32-bit counts) is not supported; convert the file to version 2 or 3");
        if (version is not (2 or 3))
            throw r.Error($"GGUF version {version} is not supported (expected 2 or 3{(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(version) is 2 or 3 ? "; this looks like a big-endian file" : "")})");

        long tensorCount = r.ReadCount("tensor count");
        long kvCount = r.ReadCount("metadata count");
        // Each key/value takes at least 13 bytes (key length, type, 1 byte value), each tensor descriptor at least 28.
        if (kvCount > r.Remaining / 13) throw r.Error($"metadata count {kvCount} cannot fit in the remaining {r.Remaining} bytes");
        if (tensorCount > r.Remaining / 28) throw r.Error($"tensor count {tensorCount} cannot fit in the remaining {r.Remaining} bytes");

        var metadata = ReadMetadata(r, kvCount);
        int alignment = ReadAlignment(r, metadata);
        var raw = ReadTensorDescriptors(r, tensorCount);
        long dataOffset = AlignUp(r.Position, alignment);
        var tensors = PlaceTensors(r, raw, dataOffset, alignment);
        return new GgufFile(path, version, alignment, dataOffset, metadata, tensors);
    }

    private static Dictionary<string, object> ReadMetadata(GgufHeaderReader r, long count)
    {
        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (long i = 0; i < count; i++)
        {
            string key = r.ReadString($"metadata key {i}");
            uint type = r.ReadUInt32($"metadata '{key}' type");
            object value = r.ReadValue((GgufValueType)type, key);
            if (!metadata.TryAdd(key, value)) throw r.Error($"metadata key '{key}' appears twice");
        }
        return metadata;
    }

    private static int ReadAlignment(GgufHeaderReader r, Dictionary<string, object> metadata)
    {
        if (!metadata.TryGetValue(AlignmentKey, out var value)) return DefaultAlignment;
        if (!TryInteger(value, out long a) || a <= 0 || a > 1 << 20 || !BitOperations.IsPow2(a))
            throw r.Error($"metadata '{AlignmentKey}' is {Describe(value)}, expected a power of two");
        return (int)a;
    }

    private sealed record RawTensor(string Name, long[] Shape, GgufTensorType Type, long RelativeOffset, long ByteLength);

    private static List<RawTensor> ReadTensorDescriptors(GgufHeaderReader r, long count)
    {
        var tensors = new List<RawTensor>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (long i = 0; i < count; i++)
        {
            string name = r.ReadString($"tensor {i} name");
            if (!names.Add(name)) throw r.Error($"tensor '{name}' appears twice");
            uint dims = r.ReadUInt32($"tensor '{name}' dimension count");
            if (dims is 0 or > MaxDims) throw r.Error($"tensor '{name}' has {dims} dimensions, expected 1 to {MaxDims}");
            var shape = new long[dims];
            for (int d = 0; d < dims; d++) shape[d] = r.ReadCount($"tensor '{name}' dimension {d}");
            uint rawType = r.ReadUInt32($"tensor '{name}' type");
            var type = (GgufTensorType)rawType;
            long offset = r.ReadCount($"tensor '{name}' offset");
            tensors.Add(new RawTensor(name, shape, type, offset, ByteLength(r, name, shape, type, rawType)));
        }
        return tensors;
    }

    /// <summary>Bytes of a tensor: the fastest axis must hold whole quantization blocks.</summary>
    private static long ByteLength(GgufHeaderReader r, string name, long[] shape, GgufTensorType type, uint rawType)
    {
        var layout = GgufTensorLayout.Of(type) ?? throw r.Error($"tensor '{name}' has unknown ggml type {rawType}");
        string shapeText = "[" + string.Join(", ", shape) + "]";
        if (shape[0] % layout.BlockElements != 0)
            throw r.Error($"tensor '{name}' of type {type} has shape {shapeText}: the first dimension must be a multiple of the block size {layout.BlockElements}");
        try
        {
            long bytes = checked(shape[0] / layout.BlockElements * layout.BlockBytes);
            for (int d = 1; d < shape.Length; d++) bytes = checked(bytes * shape[d]);
            return bytes;
        }
        catch (OverflowException)
        {
            throw r.Error($"tensor '{name}' of type {type} with shape {shapeText} is larger than any file can hold");
        }
    }

    /// <summary>Turns relative offsets into absolute ones and checks alignment, bounds and overlap.</summary>
    private static List<GgufTensorInfo> PlaceTensors(GgufHeaderReader r, List<RawTensor> raw, long dataOffset, int alignment)
    {
        var placed = new List<GgufTensorInfo>(raw.Count);
        foreach (var t in raw)
        {
            string shapeText = "[" + string.Join(", ", t.Shape) + "]";
            if (t.RelativeOffset % alignment != 0)
                throw r.Error($"tensor '{t.Name}' offset {t.RelativeOffset} is not a multiple of the alignment {alignment}");
            if (t.RelativeOffset > r.Length || t.ByteLength > r.Length || dataOffset + t.RelativeOffset > r.Length - t.ByteLength)
                throw r.Error($"tensor '{t.Name}' ({t.Type} {shapeText}, {t.ByteLength} bytes at data offset {t.RelativeOffset}, file offset {dataOffset + t.RelativeOffset}) extends past the end of the file ({r.Length} bytes)");
            placed.Add(new GgufTensorInfo(t.Name, t.Shape, t.Type, dataOffset + t.RelativeOffset, t.ByteLength));
        }
        var byOffset = placed.OrderBy(t => t.Offset).ToList();
        for (int i = 1; i < byOffset.Count; i++)
        {
            var prev = byOffset[i - 1];
            if (byOffset[i].Offset < prev.Offset + prev.ByteLength)
                throw r.Error($"tensor '{byOffset[i].Name}' at offset {byOffset[i].Offset} overlaps tensor '{prev.Name}' ({prev.ByteLength} bytes at {prev.Offset})");
        }
        return placed;
    }

    private static long AlignUp(long position, int alignment) => (position + alignment - 1) / alignment * alignment;

    /// <summary>The metadata value of <paramref name="key"/>, which must have exactly CLR type <typeparamref name="T"/>.</summary>
    public T Get<T>(string key)
    {
        if (!Metadata.TryGetValue(key, out var value)) throw Missing(key);
        return value is T t ? t : throw WrongType(key, value, typeof(T).Name);
    }

    /// <summary>
    /// False when <paramref name="key"/> is absent; the value when it has CLR type <typeparamref name="T"/>;
    /// a <see cref="ModelFormatException"/> when it is present with another type.
    /// </summary>
    public bool TryGet<T>(string key, out T value)
    {
        if (!Metadata.TryGetValue(key, out var v))
        {
            value = default!;
            return false;
        }
        value = v is T t ? t : throw WrongType(key, v, typeof(T).Name);
        return true;
    }

    public string GetString(string key) => Get<string>(key);

    /// <summary>An integer of any GGUF integer type whose value fits in an int.</summary>
    public int GetInt(string key)
    {
        if (!Metadata.TryGetValue(key, out var value)) throw Missing(key);
        if (TryInteger(value, out long v) && v is >= int.MinValue and <= int.MaxValue) return (int)v;
        throw WrongType(key, value, "an integer in the int range");
    }

    /// <summary>A float32 or float64 value (or an integer), as float.</summary>
    public float GetFloat(string key)
    {
        if (!Metadata.TryGetValue(key, out var value)) throw Missing(key);
        return value switch
        {
            float f => f,
            double d => (float)d,
            _ when TryInteger(value, out long v) => v,
            _ => throw WrongType(key, value, "a number"),
        };
    }

    public string[] GetStrings(string key) => Get<string[]>(key);

    /// <summary>A float32 array (a float64 array is converted).</summary>
    public float[] GetFloats(string key)
    {
        if (!Metadata.TryGetValue(key, out var value)) throw Missing(key);
        return value switch
        {
            float[] f => f,
            double[] d => Array.ConvertAll(d, x => (float)x),
            _ => throw WrongType(key, value, "a float array"),
        };
    }

    /// <summary>An array of any integer type whose every element fits in an int.</summary>
    public int[] GetInts(string key)
    {
        if (!Metadata.TryGetValue(key, out var value)) throw Missing(key);
        if (value is int[] ints) return ints;
        if (value is not Array array || value is string[] or float[] or double[] or bool[] or object[])
            throw WrongType(key, value, "an integer array");
        var result = new int[array.Length];
        for (int i = 0; i < result.Length; i++)
        {
            object element = array.GetValue(i)!;
            if (!TryInteger(element, out long v) || v is < int.MinValue or > int.MaxValue)
                throw new ModelFormatException(Path, $"metadata '{key}' element {i} is {element}, outside the int range");
            result[i] = (int)v;
        }
        return result;
    }

    /// <summary>The tensor called <paramref name="name"/>, or null.</summary>
    public GgufTensorInfo? FindTensor(string name) => tensorsByName.GetValueOrDefault(name);

    /// <summary>
    /// The elements of a tensor as float32, in file order (Shape[0] fastest): F32, F16 and BF16 are decoded, the
    /// block-quantised types of <see cref="QuantFormat"/> (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) dequantised
    /// exactly as ggml does.
    /// </summary>
    /// <exception cref="ModelFormatException">The type cannot be decoded, or the tensor is not this file's.</exception>
    public float[] ReadTensor(GgufTensorInfo info)
    {
        CheckOwn(info);
        if (QuantFormatOf(info.Type) is { } format)
        {
            if (info.ElementCount > Array.MaxLength)
                throw new ModelFormatException(Path, $"tensor '{info.Name}' has {info.ElementCount} elements, more than one array can hold");
            var values = new float[info.ElementCount];
            QuantFormats.Dequantize(format, ReadRawTensor(info), values);
            return values;
        }
        var encoding = info.Type switch
        {
            GgufTensorType.F32 => FloatEncoding.F32,
            GgufTensorType.F16 => FloatEncoding.F16,
            GgufTensorType.BF16 => FloatEncoding.BF16,
            _ => throw new ModelFormatException(Path, $"tensor '{info.Name}' {info.ShapeString}: type {info.Type} is not supported (readable types: {ReadableTypes})"),
        };
        return FloatFileReader.Read(Path, info.Name, info.Offset, info.ByteLength / FloatFileReader.ElementBytes(encoding), encoding);
    }

    /// <summary>The tensor types <see cref="ReadTensor"/> decodes, for messages.</summary>
    public const string ReadableTypes = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

    /// <summary>The stored bytes of a tensor, unchanged (for quantised tensors kept quantised in memory).</summary>
    public byte[] ReadRawTensor(GgufTensorInfo info)
    {
        CheckOwn(info);
        if (info.ByteLength > Array.MaxLength)
            throw new ModelFormatException(Path, $"tensor '{info.Name}' has {info.ByteLength} bytes, more than one array can hold");
        var bytes = new byte[info.ByteLength];
        using var handle = File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        int got = 0;
        while (got < bytes.Length)
        {
            int read = RandomAccess.Read(handle, bytes.AsSpan(got), info.Offset + got);
            if (read == 0) throw new ModelFormatException(Path, $"tensor '{info.Name}' is cut short at file offset {info.Offset + got}");
            got += read;
        }
        return bytes;
    }

    /// <summary>The block-quantisation format of a GGUF tensor type, or null for float and unsupported types.</summary>
    public static QuantFormat? QuantFormatOf(GgufTensorType type) => type switch
    {
        GgufTensorType.Q4_0 => QuantFormat.Q4_0,
        GgufTensorType.Q4_1 => QuantFormat.Q4_1,
        GgufTensorType.Q5_0 => QuantFormat.Q5_0,
        GgufTensorType.Q5_1 => QuantFormat.Q5_1,
        GgufTensorType.Q8_0 => QuantFormat.Q8_0,
        GgufTensorType.Q2_K => QuantFormat.Q2_K,
        GgufTensorType.Q3_K => QuantFormat.Q3_K,
        GgufTensorType.Q4_K => QuantFormat.Q4_K,
        GgufTensorType.Q5_K => QuantFormat.Q5_K,
        GgufTensorType.Q6_K => QuantFormat.Q6_K,
        _ => null,
    };

    private void CheckOwn(GgufTensorInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (!tensorsByName.TryGetValue(info.Name, out var own) || own.Offset != info.Offset || own.ByteLength != info.ByteLength || own.Type != info.Type)
            throw new ArgumentException($"tensor '{info.Name}' is not a tensor of {Path}", nameof(info));
    }

    /// <summary>Widens any boxed GGUF integer to long (uint64 values above long.MaxValue do not convert).</summary>
    private static bool TryInteger(object value, out long result)
    {
        (bool ok, result) = value switch
        {
            byte v => (true, (long)v),
            sbyte v => (true, v),
            ushort v => (true, v),
            short v => (true, v),
            uint v => (true, v),
            int v => (true, v),
            long v => (true, v),
            ulong v when v <= long.MaxValue => (true, (long)v),
            _ => (false, 0L),
        };
        return ok;
    }

    private static string Describe(object value) => value switch
    {
        string s => $"the string \"{(s.Length > 40 ? s[..40] + "..." : s)}\"",
        Array a => $"a {value.GetType().GetElementType()!.Name} array of {a.Length}",
        _ => $"{value} ({value.GetType().Name})",
    };

    private ModelFormatException Missing(string key) => new(Path, $"metadata key '{key}' is missing");

    private ModelFormatException WrongType(string key, object value, string expected) =>
        new(Path, $"metadata '{key}' is {Describe(value)}, expected {expected}");
}
