using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace UioLlm.Model.Formats;

/// <summary>Little-endian float32 blocks between streams and spans (every checkpoint format here is little-endian).</summary>
internal static class BinaryData
{
    /// <summary>Fills <paramref name="destination"/> with little-endian float32 values read from <paramref name="stream"/>.</summary>
    public static void ReadFloats(Stream stream, Span<float> destination)
    {
        stream.ReadExactly(MemoryMarshal.AsBytes(destination));
        if (!BitConverter.IsLittleEndian)
        {
            var bits = MemoryMarshal.Cast<float, int>(destination);
            BinaryPrimitives.ReverseEndianness(bits, bits);
        }
    }

    /// <summary>Writes <paramref name="source"/> as little-endian float32 values.</summary>
    public static void WriteFloats(Stream stream, ReadOnlySpan<float> source)
    {
        if (BitConverter.IsLittleEndian)
        {
            stream.Write(MemoryMarshal.AsBytes(source));
            return;
        }
        var swapped = MemoryMarshal.Cast<float, int>(source).ToArray();
        BinaryPrimitives.ReverseEndianness(swapped, swapped);
        stream.Write(MemoryMarshal.AsBytes(swapped.AsSpan()));
    }

    /// <summary>Decodes little-endian float32 bytes.</summary>
    public static void DecodeF32(ReadOnlySpan<byte> source, Span<float> destination)
    {
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.Cast<byte, float>(source[..(4 * destination.Length)]).CopyTo(destination);
            return;
        }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source.Slice(4 * i, 4));
    }

    /// <summary>Decodes little-endian IEEE half-precision bytes.</summary>
    public static void DecodeF16(ReadOnlySpan<byte> source, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(source.Slice(2 * i, 2));
    }

    /// <summary>Decodes little-endian bfloat16 bytes (the upper half of a float32).</summary>
    public static void DecodeBF16(ReadOnlySpan<byte> source, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(2 * i, 2)) << 16);
    }

    /// <summary>Encodes to half precision, rounding to nearest even (overflow becomes infinity).</summary>
    public static void EncodeF16(ReadOnlySpan<float> source, Span<byte> destination)
    {
        for (int i = 0; i < source.Length; i++)
            BinaryPrimitives.WriteHalfLittleEndian(destination.Slice(2 * i, 2), (Half)source[i]);
    }

    /// <summary>Encodes to bfloat16, rounding to nearest even; NaN stays a (quiet) NaN.</summary>
    public static void EncodeBF16(ReadOnlySpan<float> source, Span<byte> destination)
    {
        for (int i = 0; i < source.Length; i++)
            BinaryPrimitives.WriteUInt16LittleEndian(destination.Slice(2 * i, 2), ToBFloat16(source[i]));
    }

    /// <summary>The bfloat16 nearest to <paramref name="value"/>, ties to even.</summary>
    public static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        // Adding 0x7FFF plus the lowest kept bit rounds half-way cases towards the even neighbour.
        uint rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)(rounded >> 16);
    }
}

/// <summary>Writes a file so that readers see either the old or the complete new content, never a partial one.</summary>
public static class AtomicFile
{
    /// <summary>Runs <paramref name="write"/> on a temporary file in the destination's folder, then renames it over <paramref name="path"/>.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{path}' has no folder", nameof(path));
        Directory.CreateDirectory(folder);
        string temp = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 (no byte-order mark), atomically.</summary>
    public static void WriteText(string path, string text)
    {
        byte[] bytes = new System.Text.UTF8Encoding(false).GetBytes(text);
        Write(path, stream => stream.Write(bytes));
    }
}

/// <summary>Checks on text that a JSON reader would otherwise reject with a message naming no file.</summary>
public static class Utf8Text
{
    /// <summary>
    /// Throws a <see cref="ModelFormatException"/> naming <paramref name="path"/> and the offset of the first byte
    /// that is not valid UTF-8 (System.Text.Json accepts such bytes inside strings and fails later, when a string
    /// is read, with a message that names no file).
    /// </summary>
    public static void Require(ReadOnlySpan<byte> bytes, string path, string what)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return;
        int offset = 0;
        while (offset < bytes.Length)
        {
            if (System.Text.Rune.DecodeFromUtf8(bytes[offset..], out _, out int consumed) != System.Buffers.OperationStatus.Done) break;
            offset += consumed;
        }
        throw new ModelFormatException(path, $"{what} is not valid UTF-8: byte {offset} (0x{bytes[offset]:X2}) does not start or continue a character");
    }
}
