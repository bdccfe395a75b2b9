using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace UioLlm.Fuzz;

/// <summary>
/// Mutates seed files: bit flips, boundary values written over integers and floats, truncation, duplicated and
/// deleted chunks, huge length fields, and for JSON files edits of the parsed tree (a value replaced by another
/// type or a boundary number, a member deleted or duplicated). Offsets favour the first 16 KB, where every
/// format keeps its header. Deterministic for a given <see cref="Random"/>.
/// </summary>
public static class Mutator
{
    private const int HeaderBias = 16 * 1024;

    private static readonly long[] BoundaryIntegers =
    [
        0, 1, 2, 3, -1, -2, 7, 8, 16, 255, 256, 1023, 65535, 65536, int.MaxValue, int.MinValue, int.MaxValue - 1,
        (long)int.MaxValue + 1, uint.MaxValue, (long)uint.MaxValue + 1, long.MaxValue, long.MinValue, 1L << 40, 1L << 53,
    ];

    private static readonly float[] BoundaryFloats =
        [float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, float.MaxValue, float.Epsilon, 1e30f, -1e30f];

    /// <summary>One mutated copy of <paramref name="seed"/> (1 to 3 mutations stacked; JSON files get tree edits half the time).</summary>
    public static byte[] Mutate(byte[] seed, bool isJson, Random rng)
    {
        if (isJson && rng.Next(2) == 0)
        {
            var tree = TryMutateJson(seed, rng);
            if (tree is not null) return tree;
        }
        byte[] data = seed;
        int count = 1 + rng.Next(3);
        for (int i = 0; i < count; i++) data = MutateBytes(data, rng);
        return data;
    }

    public static byte[] MutateBytes(byte[] input, Random rng)
    {
        if (input.Length == 0) return [(byte)rng.Next(256)];
        var data = (byte[])input.Clone();
        switch (rng.Next(8))
        {
            case 0: // flip 1-8 bits
                for (int n = 1 + rng.Next(8); n > 0; n--) data[Offset(data.Length, rng)] ^= (byte)(1 << rng.Next(8));
                return data;
            case 1: // a boundary integer of 1, 2, 4 or 8 bytes
            {
                int width = 1 << rng.Next(4);
                if (data.Length < width) return data;
                int at = Math.Min(Offset(data.Length, rng) & ~(rng.Next(2) == 0 ? width - 1 : 0), data.Length - width);
                long value = BoundaryIntegers[rng.Next(BoundaryIntegers.Length)];
                Span<byte> bytes = stackalloc byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
                bytes[..width].CopyTo(data.AsSpan(at));
                return data;
            }
            case 2: // a boundary float
            {
                if (data.Length < 4) return data;
                int at = Math.Min(Offset(data.Length, rng) & ~3, data.Length - 4);
                BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(at), BoundaryFloats[rng.Next(BoundaryFloats.Length)]);
                return data;
            }
            case 3: // truncate
                return data[..Offset(data.Length, rng)];
            case 4: // duplicate a chunk
            {
                int start = Offset(data.Length, rng), length = 1 + rng.Next(Math.Min(4096, data.Length - start));
                int at = Offset(data.Length, rng);
                return [.. data.AsSpan(0, at), .. data.AsSpan(start, length), .. data.AsSpan(at)];
            }
            case 5: // delete a chunk
            {
                int start = Offset(data.Length, rng), length = 1 + rng.Next(Math.Min(4096, data.Length - start));
                return [.. data.AsSpan(0, start), .. data.AsSpan(start + length)];
            }
            case 6: // a huge length field: 8 bytes of 0x7F.. or 0xFF.. somewhere early
            {
                if (data.Length < 8) return data;
                int at = Math.Min(rng.Next(Math.Min(data.Length, 512)), data.Length - 8);
                BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(at), rng.Next(2) == 0 ? ulong.MaxValue : (ulong)long.MaxValue);
                return data;
            }
            default: // random bytes over a short run
            {
                int at = Offset(data.Length, rng);
                for (int n = Math.Min(1 + rng.Next(16), data.Length - at); n > 0; n--) data[at++] = (byte)rng.Next(256);
                return data;
            }
        }
    }

    private static int Offset(int length, Random rng) =>
        rng.Next(4) != 0 && length > HeaderBias ? rng.Next(HeaderBias) : rng.Next(length);

    private static byte[]? TryMutateJson(byte[] seed, Random rng)
    {
        if (!System.Text.Unicode.Utf8.IsValid(seed)) return null;
        try
        {
            return MutateJsonTree(seed, rng);
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            return null;
        }
    }

    private static byte[]? MutateJsonTree(byte[] seed, Random rng)
    {
        var root = JsonNode.Parse(seed, documentOptions: new JsonDocumentOptions { MaxDepth = 256 });
        if (root is null) return null;
        var nodes = new List<JsonNode>();
        Collect(root, nodes, rng, limit: 4096);
        int edits = 1 + rng.Next(3);
        for (int e = 0; e < edits; e++)
        {
            var node = nodes[rng.Next(nodes.Count)];
            if (node == root)
            {
                if (rng.Next(4) == 0) root = Replacement(rng);
                continue;
            }
            if (node.Parent is not { } parent) continue;
            switch (rng.Next(4))
            {
                case 0 when parent is JsonObject obj: obj.Remove(node.GetPropertyName()); break;
                case 0 when parent is JsonArray arr: arr.Remove(node); break;
                case 1 when parent is JsonArray arr: arr.Add(node.DeepClone()); break;
                default: node.ReplaceWith(Replacement(rng)); break;
            }
            nodes.Remove(node);
            if (nodes.Count == 0) break;
        }
        return root is null ? "null"u8.ToArray() : Encoding.UTF8.GetBytes(root.ToJsonString());
    }

    private static void Collect(JsonNode node, List<JsonNode> nodes, Random rng, int limit)
    {
        // Reservoir over the tree (large vocabularies hold many thousand members).
        int seen = 0;
        var stack = new Stack<JsonNode>();
        stack.Push(node);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            seen++;
            if (nodes.Count < limit) nodes.Add(n);
            else if (rng.Next(seen) < limit) nodes[rng.Next(limit)] = n;
            if (n is JsonObject o) foreach (var kv in o) { if (kv.Value is not null) stack.Push(kv.Value); }
            else if (n is JsonArray a) foreach (var v in a) { if (v is not null) stack.Push(v); }
        }
    }

    private static JsonNode? Replacement(Random rng) => rng.Next(16) switch
    {
        0 => null,
        1 => JsonValue.Create(0),
        2 => JsonValue.Create(-1),
        3 => JsonValue.Create(int.MaxValue),
        4 => JsonValue.Create(int.MinValue),
        5 => JsonValue.Create(long.MaxValue),
        6 => JsonValue.Create(1e308),
        7 => JsonValue.Create(-1e-308),
        8 => JsonValue.Create(0.5),
        9 => JsonValue.Create(""),
        10 => JsonValue.Create("\u0000\uFFFD\U0001F600"),
        11 => JsonValue.Create(true),
        12 => new JsonArray(),
        13 => new JsonObject(),
        14 => new JsonArray(JsonValue.Create(1), JsonValue.Create("a")),
        _ => JsonValue.Create(new string('a', 1 + rng.Next(300))),
    };
}
