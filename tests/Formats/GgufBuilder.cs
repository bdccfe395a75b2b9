using System.Text;

namespace UioLlm.Tests.Formats;

/// <summary>Writes small GGUF files byte by byte, so tests can build valid and deliberately corrupted ones.</summary>
public sealed class GgufBuilder
{
    private readonly MemoryStream buffer = new();
    private readonly BinaryWriter w;

    public GgufBuilder() => w = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true);

    /// <summary>Magic, version and the two 64-bit counts.</summary>
    public GgufBuilder Header(uint version, ulong tensors, ulong kvs, uint magic = 0x46554747)
    {
        w.Write(magic);
        w.Write(version);
        w.Write(tensors);
        w.Write(kvs);
        return this;
    }

    public GgufBuilder U32(uint v) { w.Write(v); return this; }
    public GgufBuilder U64(ulong v) { w.Write(v); return this; }
    public GgufBuilder F32(float v) { w.Write(v); return this; }
    public GgufBuilder U16(ushort v) { w.Write(v); return this; }
    public GgufBuilder Byte(byte v) { w.Write(v); return this; }

    public GgufBuilder Str(string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
        return this;
    }

    public GgufBuilder KvString(string key, string value) => Str(key).U32(8).Str(value);
    public GgufBuilder KvU32(string key, uint value) => Str(key).U32(4).U32(value);
    public GgufBuilder KvF32(string key, float value) => Str(key).U32(6).F32(value);

    /// <summary>A tensor descriptor: name, dims (fastest first), ggml type, offset relative to the data section.</summary>
    public GgufBuilder Tensor(string name, ulong[] dims, uint type, ulong offset)
    {
        Str(name).U32((uint)dims.Length);
        foreach (var d in dims) U64(d);
        return U32(type).U64(offset);
    }

    /// <summary>Zero bytes up to the next multiple of <paramref name="alignment"/>.</summary>
    public GgufBuilder Pad(int alignment)
    {
        w.Flush();
        while (buffer.Length % alignment != 0) w.Write((byte)0);
        return this;
    }

    public byte[] ToArray()
    {
        w.Flush();
        return buffer.ToArray();
    }

    public string WriteTo(TempDir dir, string name)
    {
        string path = dir.File(name);
        File.WriteAllBytes(path, ToArray());
        return path;
    }
}
