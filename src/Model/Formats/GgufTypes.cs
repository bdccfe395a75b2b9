namespace UioLlm.Model.Formats;

/// <summary>The type tag of a GGUF metadata value (gguf_type).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>
/// The storage type of a GGUF tensor (ggml_type). Only F32, F16 and BF16 can be decoded here; the others are
/// named so that errors can say which quantization a file uses.
/// </summary>
public enum GgufTensorType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

/// <summary>
/// One tensor of a GGUF file. <paramref name="Shape"/> is in ggml order: Shape[0] is the fastest-varying
/// axis (a row-major [rows, columns] matrix has Shape = [columns, rows]). <paramref name="Offset"/> is the
/// absolute file offset of the data and <paramref name="ByteLength"/> its size.
/// </summary>
public sealed record GgufTensorInfo(string Name, long[] Shape, GgufTensorType Type, long Offset, long ByteLength)
{
    /// <summary>Number of elements (product of the shape).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The shape written fastest axis first, as ggml prints it.</summary>
    public string ShapeString => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>Storage layout of each <see cref="GgufTensorType"/>: elements per block and bytes per block.</summary>
internal static class GgufTensorLayout
{
    /// <summary>Elements per block and bytes per block, or null for a type id this reader does not know.</summary>
    public static (int BlockElements, int BlockBytes)? Of(GgufTensorType type) => type switch
    {
        GgufTensorType.F32 => (1, 4),
        GgufTensorType.F16 => (1, 2),
        GgufTensorType.BF16 => (1, 2),
        GgufTensorType.F64 => (1, 8),
        GgufTensorType.I8 => (1, 1),
        GgufTensorType.I16 => (1, 2),
        GgufTensorType.I32 => (1, 4),
        GgufTensorType.I64 => (1, 8),
        GgufTensorType.Q4_0 => (32, 18),
        GgufTensorType.Q4_1 => (32, 20),
        GgufTensorType.Q5_0 => (32, 22),
        GgufTensorType.Q5_1 => (32, 24),
        GgufTensorType.Q8_0 => (32, 34),
        GgufTensorType.Q8_1 => (32, 36),
        GgufTensorType.IQ4_NL => (32, 18),
        GgufTensorType.MXFP4 => (32, 17),
        GgufTensorType.Q2_K => (256, 84),
        GgufTensorType.Q3_K => (256, 110),
        GgufTensorType.Q4_K => (256, 144),
        GgufTensorType.Q5_K => (256, 176),
        GgufTensorType.Q6_K => (256, 210),
        GgufTensorType.Q8_K => (256, 292),
        GgufTensorType.IQ2_XXS => (256, 66),
        GgufTensorType.IQ2_XS => (256, 74),
        GgufTensorType.IQ3_XXS => (256, 98),
        GgufTensorType.IQ1_S => (256, 50),
        GgufTensorType.IQ3_S => (256, 110),
        GgufTensorType.IQ2_S => (256, 82),
        GgufTensorType.IQ4_XS => (256, 136),
        GgufTensorType.IQ1_M => (256, 56),
        GgufTensorType.TQ1_0 => (256, 54),
        GgufTensorType.TQ2_0 => (256, 66),
        _ => null,
    };
}
