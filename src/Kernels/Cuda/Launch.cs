using System.Runtime.CompilerServices;

namespace UioLlm.Kernels.Cuda;

/// <summary>
/// One kernel argument as cuLaunchKernel wants it: the value's bytes in an 8-byte slot (device pointers as
/// 64-bit, int and float as 32-bit little-endian in the low half), and its size.
/// </summary>
public readonly struct KernelArg
{
    public KernelArg(long bits, int size)
    {
        Bits = bits;
        Size = size;
    }

    /// <summary>The raw bits (low <see cref="Size"/> bytes are the value).</summary>
    public long Bits { get; }

    public int Size { get; }

    public static KernelArg Int(int v) => new((uint)v, 4);
    public static KernelArg Float(float v) => new(BitConverter.SingleToUInt32Bits(v), 4);
    public static KernelArg Long(long v) => new(v, 8);
    public static KernelArg Double(double v) => new(BitConverter.DoubleToInt64Bits(v), 8);
    public static KernelArg Pointer(nint p) => new(p, 8);
    public static KernelArg Pointer(ulong p) => new((long)p, 8);

    /// <summary>The device address of a tensor's first element (null gradient outputs become 0).</summary>
    public static KernelArg Of(Tensor? t) => new(t is null ? 0 : t.Address, 8);

    public static implicit operator KernelArg(int v) => Int(v);
    public static implicit operator KernelArg(float v) => Float(v);
    public static implicit operator KernelArg(Tensor? t) => Of(t);

    /// <summary>Write each value into its slot and the slot's address into <paramref name="pointers"/> (the kernelParams array).</summary>
    public static unsafe void Pack(ReadOnlySpan<KernelArg> args, long* values, void** pointers)
    {
        for (int i = 0; i < args.Length; i++)
        {
            values[i] = args[i].Size == 4 ? (long)(uint)args[i].Bits : args[i].Bits;
            pointers[i] = values + i;
        }
    }

    public override string ToString() => Size == 4 ? $"0x{(uint)Bits:x8}" : $"0x{Bits:x16}";
}

/// <summary>Grid, block and dynamic shared memory of one launch, with the geometry rules checked on the host.</summary>
public readonly record struct LaunchShape(uint GridX, uint GridY, uint GridZ, uint BlockX, uint BlockY, uint BlockZ, int SharedBytes)
{
    public const uint MaxGridX = int.MaxValue;
    public const uint MaxGridYZ = 65535;

    /// <summary>A 1-D launch of <paramref name="threads"/> threads in blocks of <paramref name="block"/>; the grid is capped (kernels stride over the rest).</summary>
    public static LaunchShape Linear(long threads, int block = 256, int sharedBytes = 0, uint maxBlocks = 65535u * 8)
    {
        long blocks = Math.Max(1, (threads + block - 1) / block);
        return new LaunchShape((uint)Math.Min(blocks, maxBlocks), 1, 1, (uint)block, 1, 1, sharedBytes) { Empty = threads == 0 };
    }

    /// <summary>A grid of the given blocks with a 1-D block.</summary>
    public static LaunchShape Grid(long x, long y, long z, int block, int sharedBytes = 0) =>
        new((uint)Math.Clamp(x, 0, uint.MaxValue), (uint)Math.Clamp(y, 0, uint.MaxValue), (uint)Math.Clamp(z, 0, uint.MaxValue),
            (uint)block, 1, 1, sharedBytes) { Empty = x == 0 || y == 0 || z == 0 };

    /// <summary>True when there is nothing to do (a zero-sized grid is not launched).</summary>
    public bool Empty { get; init; }

    public bool IsEmpty => Empty;

    /// <summary>Throw <see cref="ArgumentException"/> naming the kernel when the shape breaks a CUDA limit.</summary>
    public void Validate(string kernel, int maxSharedOptin)
    {
        if (Empty) return;
        long threads = (long)BlockX * BlockY * BlockZ;
        if (threads == 0 || threads > 1024)
            throw new ArgumentException($"kernel '{kernel}': block {BlockX}x{BlockY}x{BlockZ} has {threads} threads; CUDA allows 1 to 1024");
        if (GridX == 0 || GridY == 0 || GridZ == 0 || GridX > MaxGridX || GridY > MaxGridYZ || GridZ > MaxGridYZ)
            throw new ArgumentException($"kernel '{kernel}': grid {GridX}x{GridY}x{GridZ} is outside CUDA's limits (x <= {MaxGridX}, y and z <= {MaxGridYZ})");
        if (SharedBytes < 0 || SharedBytes > maxSharedOptin)
            throw new ArgumentException($"kernel '{kernel}': {SharedBytes} bytes of shared memory requested, the device allows {maxSharedOptin} per block");
    }

    public override string ToString() => $"grid {GridX}x{GridY}x{GridZ}, block {BlockX}x{BlockY}x{BlockZ}, {SharedBytes} B shared";
}

internal static class LaunchMath
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CeilDiv(int a, int b) => (a + b - 1) / b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long CeilDiv(long a, long b) => (a + b - 1) / b;
}
