using System.Collections.Concurrent;

namespace UioLlm.Model.Tokenizers;

/// <summary>
/// A thread-safe memo of word -> token ids, looked up by span so that hits allocate nothing.
/// It is cleared when it grows past its capacity, which bounds memory on unbounded input.
/// </summary>
internal sealed class WordCache
{
    private readonly ConcurrentDictionary<string, int[]> map = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> bySpan;
    private readonly int capacity;
    private int count; // ConcurrentDictionary.Count takes every lock, so the size is tracked here

    public WordCache(int capacity = 100_000)
    {
        this.capacity = capacity;
        bySpan = map.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public bool TryGet(ReadOnlySpan<char> word, out int[] ids) => bySpan.TryGetValue(word, out ids!);

    public void Add(ReadOnlySpan<char> word, int[] ids)
    {
        if (Volatile.Read(ref count) >= capacity)
        {
            map.Clear();
            Volatile.Write(ref count, 0);
        }
        if (map.TryAdd(word.ToString(), ids)) Interlocked.Increment(ref count);
    }
}
