using System.Buffers.Binary;
using System.Text;
using UioLlm.Model.Formats;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Formats.FormatsTestSupport;

namespace UioLlm.Tests.Formats;

public class SafetensorsTests
{
    /// <summary>A raw file: 8-byte length, the header text as given, then <paramref name="dataBytes"/> zero bytes.</summary>
    private static byte[] Raw(string header, int dataBytes, ulong? claimedLength = null)
    {
        byte[] h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, claimedLength ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        return bytes;
    }

    [Fact]
    public void F32_round_trip_keeps_values_shapes_order_and_metadata()
    {
        using var dir = new TempDir();
        string path = dir.File("t.safetensors");
        var rng = new Rng(3);
        float[] a = rng.Normal(12), b = rng.Normal(5);
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromArray("z.first", [3, 4], a), SafetensorsEntry.FromArray("a.second", [5], b),
            SafetensorsEntry.FromArray("empty", [0, 2], [])], metadata: new Dictionary<string, string> { ["format"] = "pt" });

        byte[] raw = File.ReadAllBytes(path);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(raw);
        Assert.Equal(0, (8 + headerLength) % 8);
        Assert.Equal(8 + headerLength + 17 * 4, raw.Length);

        var f = SafetensorsFile.Read(path);
        Assert.Equal(8 + headerLength, f.DataOffset);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal(["z.first", "a.second", "empty"], f.Tensors.Select(t => t.Name));
        var first = f.Find("z.first")!;
        Assert.Equal((SafetensorsDType.F32, 0L, 48L), (first.DType, first.Begin, first.End));
        Assert.Equal([3L, 4L], first.Shape);
        AssertBits(a, f.ReadTensor(first), "z.first");
        AssertBits(b, f.ReadTensor(f.Find("a.second")!), "a.second");
        Assert.Empty(f.ReadTensor(f.Find("empty")!));
        Assert.Null(f.Find("missing"));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Theory]
    [InlineData(SafetensorsDType.F16)]
    [InlineData(SafetensorsDType.BF16)]
    public void Half_precision_writes_round_to_nearest_even_and_read_back(SafetensorsDType dtype)
    {
        using var dir = new TempDir();
        string path = dir.File("h.safetensors");
        float[] probes = RoundingReference.Probes();
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromArray("x", [probes.Length], probes), SafetensorsEntry.FromArray("nan", [1], [float.NaN])], dtype);

        var f = SafetensorsFile.Read(path);
        byte[] raw = File.ReadAllBytes(path);
        var x = f.Find("x")!;
        Assert.Equal(dtype, x.DType);
        var decoded = f.ReadTensor(x);
        for (int i = 0; i < probes.Length; i++)
        {
            ushort stored = BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan((int)(f.DataOffset + x.Begin + 2 * i)));
            ushort expected = dtype == SafetensorsDType.F16 ? RoundingReference.ToHalf(probes[i]) : RoundingReference.ToBFloat16(probes[i]);
            Assert.True(expected == stored, $"{dtype} of {probes[i]:G9} (index {i}): stored 0x{stored:X4}, expected 0x{expected:X4}");
            float value = dtype == SafetensorsDType.F16 ? HalfReference.Decode(stored) : BitConverter.Int32BitsToSingle(stored << 16);
            Assert.Equal(value, decoded[i]);
        }
        Assert.True(float.IsNaN(f.ReadTensor(f.Find("nan")!)[0]));
    }

    public static TheoryData<string, byte[], string> CorruptFiles() => new()
    {
        { "tiny", new byte[] { 1, 2, 3 }, "8-byte header length" },
        { "hugeheader", Raw("{}", 0, claimedLength: 1UL << 50), "header length is 1125899906842624" },
        { "pastend", Raw("{}", 0, claimedLength: 3), "header length is 3" },
        { "json", Raw("{\"a\": [", 0), "not valid JSON" },
        { "array", Raw("[1, 2]", 0), "JSON Array, expected an object" },
        { "dtype", Raw("{\"w\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "tensor 'w': dtype 'F17' is unknown" },
        { "shape", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "tensor 'w': 'shape' element 0 is -1" },
        { "size", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4), "tensor 'w': data_offsets [0, 4] span 4 bytes, but F32 [2] needs 8" },
        { "range", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), "tensor 'w' data_offsets [0, 8] extend past the data section (4 bytes)" },
        { "gap", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "tensor 'w' begins at data offset 4, expected 0" },
        { "overlap", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "must not overlap" },
        { "trailing", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12), "tensors cover 4 bytes but the data section has 12" },
        { "metadata", Raw("{\"__metadata__\":{\"n\":3}}", 0), "'__metadata__' entry 'n' is a JSON Number" },
        { "offsets", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4), "tensor 'w': 'data_offsets' has 1 entries" },
    };

    [Theory]
    [MemberData(nameof(CorruptFiles))]
    public void Corrupted_files_fail_with_named_errors(string name, byte[] bytes, string fragment)
    {
        using var dir = new TempDir();
        string path = dir.File(name + ".safetensors");
        File.WriteAllBytes(path, bytes);
        AssertFormatError(() => SafetensorsFile.Read(path), path, fragment);
    }

    [Fact]
    public void Unsupported_dtype_is_named_when_read()
    {
        using var dir = new TempDir();
        string path = dir.File("i32.safetensors");
        File.WriteAllBytes(path, Raw("{\"ids\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8));
        var f = SafetensorsFile.Read(path);
        AssertFormatError(() => f.ReadTensor(f.Find("ids")!), path, "'ids'", "I32 is not supported");
    }

    [Fact]
    public void Writer_rejects_bad_entries_and_leaves_no_file()
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [SafetensorsEntry.FromArray("a", [1], [1f]), SafetensorsEntry.FromArray("a", [1], [2f])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [SafetensorsEntry.FromArray("a", [2], [1f])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [SafetensorsEntry.FromArray("a", [1], [1f])], SafetensorsDType.I32));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }
}
