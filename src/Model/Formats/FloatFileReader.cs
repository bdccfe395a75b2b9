using Microsoft.Win32.SafeHandles;

namespace UioLlm.Model.Formats;

/// <summary>How the stored elements of a tensor encode floats.</summary>
internal enum FloatEncoding
{
    F32,
    F16,
    BF16,
}

/// <summary>Reads one tensor's bytes from a file in chunks (never the whole file) and decodes them to float32.</summary>
internal static class FloatFileReader
{
    private const int ChunkElements = 1 << 18;

    public static int ElementBytes(FloatEncoding encoding) => encoding == FloatEncoding.F32 ? 4 : 2;

    /// <summary>
    /// Decodes <paramref name="count"/> elements starting at absolute <paramref name="offset"/> of <paramref name="path"/>.
    /// </summary>
    /// <exception cref="ModelFormatException">The range is not inside the file or holds more elements than an array can.</exception>
    public static float[] Read(string path, string tensor, long offset, long count, FloatEncoding encoding)
    {
        if (count > Array.MaxLength)
            throw new ModelFormatException(path, $"tensor '{tensor}' has {count} elements, more than one array can hold");
        int elementBytes = ElementBytes(encoding);
        var values = new float[count];
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = RandomAccess.GetLength(handle);
        if (offset < 0 || offset > length || count * elementBytes > length - offset)
            throw new ModelFormatException(path, $"tensor '{tensor}' ({count * elementBytes} bytes at offset {offset}) extends past the end of the file ({length} bytes)");

        var buffer = new byte[ChunkElements * elementBytes];
        for (long done = 0; done < count; done += ChunkElements)
        {
            int n = (int)Math.Min(ChunkElements, count - done);
            var bytes = buffer.AsSpan(0, n * elementBytes);
            ReadExactly(handle, bytes, offset + done * elementBytes, path, tensor);
            var destination = values.AsSpan((int)done, n);
            switch (encoding)
            {
                case FloatEncoding.F32: BinaryData.DecodeF32(bytes, destination); break;
                case FloatEncoding.F16: BinaryData.DecodeF16(bytes, destination); break;
                default: BinaryData.DecodeBF16(bytes, destination); break;
            }
        }
        return values;
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> bytes, long at, string path, string tensor)
    {
        int got = 0;
        while (got < bytes.Length)
        {
            int read = RandomAccess.Read(handle, bytes[got..], at + got);
            if (read == 0) throw new ModelFormatException(path, $"tensor '{tensor}' is cut short at file offset {at + got}");
            got += read;
        }
    }
}
