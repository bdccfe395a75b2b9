using System.Buffers.Binary;
using System.Text;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// A minimal reader of the protobuf wire format (varint, 64-bit, length-delimited and 32-bit fields), enough for
/// the SentencePiece ModelProto. Every read is bounds-checked and reports the file and the message being read.
/// </summary>
internal ref struct ProtobufReader
{
    private readonly ReadOnlySpan<byte> data;
    private readonly string file;
    private readonly string message;
    private int pos;

    public ProtobufReader(ReadOnlySpan<byte> data, string file, string message)
    {
        this.data = data;
        this.file = file;
        this.message = message;
    }

    public readonly bool AtEnd => pos >= data.Length;

    /// <summary>Reads the next field key: its number and wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).</summary>
    public (int Field, int WireType) ReadKey()
    {
        ulong key = ReadVarint();
        int field = (int)(key >> 3), wire = (int)(key & 7);
        if (field == 0 || key >> 3 > int.MaxValue) throw Error($"invalid field number {key >> 3}");
        return (field, wire);
    }

    public ulong ReadVarint()
    {
        ulong value = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (pos >= data.Length) throw Error("truncated varint");
            byte b = data[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw Error("varint longer than 10 bytes");
    }

    /// <summary>An int32 field (negative values are sign-extended to 10-byte varints on the wire).</summary>
    public int ReadInt32() => unchecked((int)(long)ReadVarint());

    public bool ReadBool() => ReadVarint() != 0;

    public float ReadFloat()
    {
        if (data.Length - pos < 4) throw Error("truncated 32-bit field");
        float v = BinaryPrimitives.ReadSingleLittleEndian(data.Slice(pos, 4));
        pos += 4;
        return v;
    }

    public ReadOnlySpan<byte> ReadBytes()
    {
        ulong length = ReadVarint();
        if (length > (ulong)(data.Length - pos))
            throw Error($"length-delimited field of {length} bytes at offset {pos} runs past the end ({data.Length - pos} bytes left)");
        var slice = data.Slice(pos, (int)length);
        pos += (int)length;
        return slice;
    }

    public string ReadString() => Encoding.UTF8.GetString(ReadBytes());

    /// <summary>Checks that the field has the expected wire type.</summary>
    public readonly void Expect(int field, int wireType, int expected, string name)
    {
        if (wireType != expected)
            throw Error($"field {field} ({name}) has wire type {wireType}, expected {expected}");
    }

    public void Skip(int wireType)
    {
        switch (wireType)
        {
            case 0: ReadVarint(); break;
            case 1: Advance(8); break;
            case 2: ReadBytes(); break;
            case 5: Advance(4); break;
            default: throw Error($"unsupported wire type {wireType} at offset {pos}");
        }
    }

    private void Advance(int n)
    {
        if (data.Length - pos < n) throw Error($"truncated {n * 8}-bit field");
        pos += n;
    }

    public readonly ModelFormatException Error(string what) => new(file, $"protobuf {message}: {what}");
}
