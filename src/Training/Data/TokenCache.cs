using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace UioLlm.Training.Data;

/// <summary>One cached document: its source line (0 for a whole file) and token ids.</summary>
public sealed record CachedDocument(int Line, int[] Ids);

/// <summary>
/// The token ids of one source file's documents, cached on disk under a key of the file (full path,
/// length, last write time) and the tokenizer identity. File layout (little-endian): magic "UIOTOKS1",
/// the 32-byte key, int32 document count, int64 token count, per document its int32 source line (0 for a
/// whole file) and int32 length, then the int32 ids. Entries are written atomically; one that is unreadable or does not match its key is a miss.
/// </summary>
public sealed class TokenCache
{
    private static readonly byte[] Magic = "UIOTOKS1"u8.ToArray();
    private const int KeyBytes = 32;
    private const int HeaderBytes = 8 + KeyBytes + 4 + 8;

    private readonly string folder;
    private readonly string tokenizerIdentity;

    /// <summary>A cache in <paramref name="folder"/> (created if missing) for one tokenizer identity.</summary>
    public TokenCache(string folder, string tokenizerIdentity)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentException.ThrowIfNullOrEmpty(tokenizerIdentity);
        this.folder = Path.GetFullPath(folder);
        this.tokenizerIdentity = tokenizerIdentity;
        Directory.CreateDirectory(this.folder);
    }

    /// <summary>The key of <paramref name="sourceFile"/> as it is now.</summary>
    public byte[] KeyOf(string sourceFile)
    {
        var info = new FileInfo(sourceFile);
        string text = $"UIOTOKS1|{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}|{tokenizerIdentity}";
        return SHA256.HashData(Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Where the entry of <paramref name="key"/> lives.</summary>
    public string EntryPath(byte[] key) => Path.Combine(folder, Convert.ToHexString(key)[..32].ToLowerInvariant() + ".tok");

    /// <summary>The cached documents of <paramref name="key"/>, or null on a miss (absent, damaged or another key).</summary>
    public CachedDocument[]? TryRead(byte[] key, int vocabSize)
    {
        string path = EntryPath(key);
        if (!File.Exists(path)) return null;
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException)
        {
            return null;
        }
        return Parse(bytes, key, vocabSize);
    }

    /// <summary>Stores <paramref name="documents"/> under <paramref name="key"/> (temp file + rename).</summary>
    public void Write(byte[] key, IReadOnlyList<CachedDocument> documents)
    {
        string path = EntryPath(key);
        string temp = $"{path}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                Span<byte> header = stackalloc byte[HeaderBytes];
                Magic.CopyTo(header);
                key.CopyTo(header[8..]);
                BinaryPrimitives.WriteInt32LittleEndian(header[(8 + KeyBytes)..], documents.Count);
                BinaryPrimitives.WriteInt64LittleEndian(header[(12 + KeyBytes)..], documents.Sum(d => (long)d.Ids.Length));
                stream.Write(header);
                WriteInts(stream, documents.SelectMany(d => new[] { d.Line, d.Ids.Length }).ToArray());
                foreach (var document in documents) WriteInts(stream, document.Ids);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    private static CachedDocument[]? Parse(byte[] bytes, byte[] key, int vocabSize)
    {
        if (bytes.Length < HeaderBytes || !bytes.AsSpan(0, 8).SequenceEqual(Magic) || !bytes.AsSpan(8, KeyBytes).SequenceEqual(key))
            return null;
        int count = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8 + KeyBytes));
        long tokens = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(12 + KeyBytes));
        if (count < 0 || tokens < 0 || HeaderBytes + 8L * count + 4L * tokens != bytes.Length) return null;

        var table = ReadInts(bytes.AsSpan(HeaderBytes, 8 * count));
        long sum = 0;
        for (int d = 0; d < count; d++)
        {
            if (table[2 * d] < 0 || table[2 * d + 1] < 0) return null;
            sum += table[2 * d + 1];
        }
        if (sum != tokens) return null;
        var documents = new CachedDocument[count];
        int offset = HeaderBytes + 8 * count;
        for (int d = 0; d < count; d++)
        {
            int length = table[2 * d + 1];
            var ids = ReadInts(bytes.AsSpan(offset, 4 * length));
            offset += 4 * length;
            foreach (int id in ids)
                if ((uint)id >= (uint)vocabSize) return null;
            documents[d] = new CachedDocument(table[2 * d], ids);
        }
        return documents;
    }

    private static void WriteInts(Stream stream, int[] values)
    {
        if (BitConverter.IsLittleEndian)
        {
            stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
            return;
        }
        var swapped = new int[values.Length];
        BinaryPrimitives.ReverseEndianness(values, swapped);
        stream.Write(MemoryMarshal.AsBytes(swapped.AsSpan()));
    }

    private static int[] ReadInts(ReadOnlySpan<byte> bytes)
    {
        var values = MemoryMarshal.Cast<byte, int>(bytes).ToArray();
        if (!BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(values, values);
        return values;
    }
}
