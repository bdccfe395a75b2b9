using System.Buffers.Binary;
using System.Text.Json;
using UioLlm.Kernels;

namespace UioLlm.Model.Formats;

/// <summary>A tensor to write: its name, row-major shape and a function producing its values when they are written.</summary>
public sealed record SafetensorsEntry(string Name, int[] Shape, Func<float[]> Values)
{
    /// <summary>The element count implied by <see cref="Shape"/>.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>An entry that reads <paramref name="tensor"/> only when it is written.</summary>
    public static SafetensorsEntry FromTensor(string name, Tensor tensor) => new(name, tensor.Shape.ToArray(), tensor.ToArray);

    public static SafetensorsEntry FromArray(string name, int[] shape, float[] values) => new(name, shape, () => values);
}

/// <summary>Writes float tensors as a safetensors file (F32, F16 or BF16; conversions round to nearest even).</summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> in order to <paramref name="path"/>, atomically (a temporary file in the
    /// same folder renamed over it). The JSON header is padded with spaces to a multiple of 8 bytes.
    /// </summary>
    /// <exception cref="ArgumentException">Duplicate or empty names, negative dims, a reserved name, or values that do not match a shape.</exception>
    public static void Write(string path, IReadOnlyList<SafetensorsEntry> tensors, SafetensorsDType dtype = SafetensorsDType.F32,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (dtype is not (SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16))
            throw new ArgumentException($"safetensors: can only write F32, F16 or BF16, not {dtype}", nameof(dtype));
        CheckEntries(tensors);
        byte[] header = BuildHeader(tensors, dtype, metadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var entry in tensors) WriteValues(stream, entry, dtype);
        });
    }

    /// <summary>Bytes the tensor takes in the data section.</summary>
    public static long DataBytes(SafetensorsEntry entry, SafetensorsDType dtype) => entry.ElementCount * SafetensorsFile.ElementSize(dtype);

    private static void CheckEntries(IReadOnlyList<SafetensorsEntry> tensors)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (string.IsNullOrEmpty(t.Name) || t.Name == "__metadata__")
                throw new ArgumentException($"safetensors: '{t.Name}' cannot be a tensor name", nameof(tensors));
            if (!names.Add(t.Name)) throw new ArgumentException($"safetensors: tensor '{t.Name}' is listed twice", nameof(tensors));
            if (t.Shape.Any(d => d < 0)) throw new ArgumentException($"safetensors: tensor '{t.Name}' has a negative dimension", nameof(tensors));
        }
    }

    private static byte[] BuildHeader(IReadOnlyList<SafetensorsEntry> tensors, SafetensorsDType dtype, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                long end = offset + DataBytes(t, dtype);
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", dtype.ToString());
                json.WriteStartArray("shape");
                foreach (int d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
                offset = end;
            }
            json.WriteEndObject();
        }
        // Pad with spaces so the data section starts 8-byte aligned (8 + header length is a multiple of 8).
        while (buffer.Length % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    private static void WriteValues(Stream stream, SafetensorsEntry entry, SafetensorsDType dtype)
    {
        float[] values = entry.Values();
        if (values.LongLength != entry.ElementCount)
            throw new ArgumentException($"safetensors: tensor '{entry.Name}' has {values.Length} values, but its shape [{string.Join(", ", entry.Shape)}] needs {entry.ElementCount}");
        if (dtype == SafetensorsDType.F32)
        {
            BinaryData.WriteFloats(stream, values);
            return;
        }
        var bytes = new byte[values.Length * 2];
        if (dtype == SafetensorsDType.F16) BinaryData.EncodeF16(values, bytes);
        else BinaryData.EncodeBF16(values, bytes);
        stream.Write(bytes);
    }
}
