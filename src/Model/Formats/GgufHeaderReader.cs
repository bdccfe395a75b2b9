using System.Buffers.Binary;
using System.Text;

namespace UioLlm.Model.Formats;

/// <summary>
/// Sequential little-endian reads of a GGUF header that check, before every read or allocation, that the
/// bytes are really in the file, so a corrupted count or length fails fast instead of allocating or hanging.
/// </summary>
internal sealed class GgufHeaderReader : IDisposable
{
    /// <summary>Nested arrays deeper than this are rejected (real files use at most one level).</summary>
    private const int MaxArrayDepth = 8;

    private readonly Stream stream;
    private readonly byte[] scratch = new byte[8];

    public GgufHeaderReader(string path)
    {
        Path = path;
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        Length = file.Length;
        stream = new BufferedStream(file, 1 << 16);
    }

    public string Path { get; }
    public long Length { get; }
    public long Position { get; private set; }
    public long Remaining => Length - Position;

    public ModelFormatException Error(string message) => new(Path, message);

    /// <summary>Fails unless <paramref name="bytes"/> more bytes exist after the current position.</summary>
    public void Need(long bytes, string what)
    {
        if (bytes < 0 || bytes > Remaining)
            throw Error($"{what} needs {bytes} bytes at offset {Position}, but only {Remaining} remain (file length {Length})");
    }

    private ReadOnlySpan<byte> Take(int bytes, string what)
    {
        Need(bytes, what);
        var span = scratch.AsSpan(0, bytes);
        stream.ReadExactly(span);
        Position += bytes;
        return span;
    }

    public byte[] ReadBytes(long count, string what)
    {
        Need(count, what);
        if (count > Array.MaxLength) throw Error($"{what} of {count} bytes is too large");
        var bytes = new byte[count];
        stream.ReadExactly(bytes);
        Position += count;
        return bytes;
    }

    public uint ReadUInt32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));

    public ulong ReadUInt64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

    /// <summary>A 64-bit count or length that must fit in a non-negative long.</summary>
    public long ReadCount(string what)
    {
        ulong v = ReadUInt64(what);
        if (v > long.MaxValue) throw Error($"{what} is {v}, which cannot be valid (file length {Length})");
        return (long)v;
    }

    /// <summary>A GGUF string: uint64 byte length, then UTF-8 bytes.</summary>
    public string ReadString(string what)
    {
        long length = ReadCount($"{what} length");
        return Encoding.UTF8.GetString(ReadBytes(length, what));
    }

    /// <summary>One metadata value of the given type, as its CLR type (arrays as typed CLR arrays).</summary>
    public object ReadValue(GgufValueType type, string key, int depth = 0)
    {
        string what = $"metadata '{key}'";
        return type switch
        {
            GgufValueType.UInt8 => Take(1, what)[0],
            GgufValueType.Int8 => (sbyte)Take(1, what)[0],
            GgufValueType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(Take(2, what)),
            GgufValueType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(Take(2, what)),
            GgufValueType.UInt32 => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what)),
            GgufValueType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(Take(4, what)),
            GgufValueType.Float32 => BinaryPrimitives.ReadSingleLittleEndian(Take(4, what)),
            GgufValueType.Bool => ReadBool(what),
            GgufValueType.String => ReadString(what),
            GgufValueType.Array => ReadArray(key, depth),
            GgufValueType.UInt64 => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what)),
            GgufValueType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(Take(8, what)),
            GgufValueType.Float64 => BinaryPrimitives.ReadDoubleLittleEndian(Take(8, what)),
            _ => throw Error($"{what} has unknown value type {(uint)type} (expected 0..12)"),
        };
    }

    private bool ReadBool(string what)
    {
        byte b = Take(1, what)[0];
        if (b > 1) throw Error($"{what} is a bool stored as {b}, expected 0 or 1");
        return b == 1;
    }

    private object ReadArray(string key, int depth)
    {
        string what = $"metadata '{key}' array";
        if (depth >= MaxArrayDepth) throw Error($"{what} nests arrays deeper than {MaxArrayDepth} levels");
        uint rawType = ReadUInt32($"{what} element type");
        var type = (GgufValueType)rawType;
        long count = ReadCount($"{what} count");
        int minElement = MinimumSize(type) ?? throw Error($"{what} has unknown element type {rawType} (expected 0..12)");
        // Every element takes at least minElement bytes, so a count beyond what the file holds is corrupt.
        if (count > Remaining / minElement)
            throw Error($"{what} claims {count} elements of type {type} (at least {(decimal)count * minElement} bytes) at offset {Position}, but only {Remaining} bytes remain");
        if (count > Array.MaxLength) throw Error($"{what} has {count} elements, too many for one array");
        int n = (int)count;
        return type switch
        {
            GgufValueType.String => Fill(new string[n], _ => ReadString($"{what} element")),
            GgufValueType.Array => Fill(new object[n], _ => ReadArray(key, depth + 1)),
            GgufValueType.Bool => Fill(new bool[n], _ => ReadBool($"{what} element")),
            _ => ReadNumbers(type, n, what),
        };
    }

    private static T[] Fill<T>(T[] array, Func<int, T> read)
    {
        for (int i = 0; i < array.Length; i++) array[i] = read(i);
        return array;
    }

    /// <summary>A numeric array read as one block and decoded element by element.</summary>
    private Array ReadNumbers(GgufValueType type, int n, string what)
    {
        int size = MinimumSize(type)!.Value;
        byte[] b = ReadBytes((long)n * size, what);
        return type switch
        {
            GgufValueType.UInt8 => b,
            GgufValueType.Int8 => Decode(n, i => (sbyte)b[i]),
            GgufValueType.UInt16 => Decode(n, i => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(2 * i))),
            GgufValueType.Int16 => Decode(n, i => BinaryPrimitives.ReadInt16LittleEndian(b.AsSpan(2 * i))),
            GgufValueType.UInt32 => Decode(n, i => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4 * i))),
            GgufValueType.Int32 => Decode(n, i => BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(4 * i))),
            GgufValueType.Float32 => Decode(n, i => BinaryPrimitives.ReadSingleLittleEndian(b.AsSpan(4 * i))),
            GgufValueType.UInt64 => Decode(n, i => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8 * i))),
            GgufValueType.Int64 => Decode(n, i => BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(8 * i))),
            GgufValueType.Float64 => Decode(n, i => BinaryPrimitives.ReadDoubleLittleEndian(b.AsSpan(8 * i))),
            _ => throw new InvalidOperationException($"{type} is not a numeric GGUF type"),
        };
    }

    private static T[] Decode<T>(int n, Func<int, T> element)
    {
        var a = new T[n];
        for (int i = 0; i < n; i++) a[i] = element(i);
        return a;
    }

    /// <summary>Smallest encoding of one value of <paramref name="type"/>; null for an unknown type.</summary>
    private static int? MinimumSize(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        GgufValueType.String => 8,   // the length prefix
        GgufValueType.Array => 12,   // element type + count
        _ => null,
    };

    public void Dispose() => stream.Dispose();
}
