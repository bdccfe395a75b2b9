namespace UioLlm.Kernels.Cpu.FlashAttention;

/// <summary>
/// Which vector width the attention kernels use (Auto = the widest the hardware accelerates). The kernels
/// are generic over <see cref="ISimdLanes{TV}"/>, so each width is the same code JIT-specialised.
/// </summary>
internal enum AttentionSimd
{
    Auto,
    Vector128,
    Vector256,
    Vector512,
}
