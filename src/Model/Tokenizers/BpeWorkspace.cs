namespace UioLlm.Model.Tokenizers;

/// <summary>A candidate merge of two adjacent symbols; stale once either symbol changed (its size no longer matches).</summary>
internal readonly record struct BpePair(int Left, int Right, int Size, int Id);

/// <summary>
/// Merge order: higher score first, then the leftmost pair. Byte-level BPE stores the negated merge rank as the
/// score so that the lowest rank goes first.
/// </summary>
internal readonly record struct BpePriority(float Score, int Left);

internal sealed class BpePriorityComparer : IComparer<BpePriority>
{
    public static readonly BpePriorityComparer Instance = new();

    public int Compare(BpePriority x, BpePriority y)
    {
        int byScore = y.Score.CompareTo(x.Score);
        return byScore != 0 ? byScore : x.Left.CompareTo(y.Left);
    }
}

/// <summary>
/// The symbols of one BPE run as a doubly linked list over the text (start, length, prev, next per symbol) and
/// the queue of candidate merges. Reused per thread so that encoding a word allocates nothing here.
/// </summary>
internal sealed class BpeWorkspace
{
    public int[] Start = new int[64], Length = new int[64], Prev = new int[64], Next = new int[64];
    /// <summary>The token id of each symbol (byte-level BPE only).</summary>
    public int[] Token = new int[64];
    public readonly PriorityQueue<BpePair, BpePriority> Queue = new(BpePriorityComparer.Instance);

    /// <summary>One symbol per code point of <paramref name="text"/> (a surrogate pair stays together). Returns the count.</summary>
    public int Reset(ReadOnlySpan<char> text)
    {
        Queue.Clear();
        EnsureCapacity(text.Length);
        int count = 0;
        for (int i = 0; i < text.Length; count++)
        {
            int width = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            Add(count, i, width);
            i += width;
        }
        if (count > 0) Next[count - 1] = -1;
        return count;
    }

    /// <summary>Sets symbol <paramref name="index"/> to text[start..start+length), linked to its neighbours by position.</summary>
    public void Add(int index, int start, int length)
    {
        Start[index] = start;
        Length[index] = length;
        Prev[index] = index - 1;
        Next[index] = index + 1;
    }

    public void EnsureCapacity(int n)
    {
        if (Start.Length >= n) return;
        int size = Math.Max(n, Start.Length * 2);
        Start = new int[size]; Length = new int[size]; Prev = new int[size]; Next = new int[size]; Token = new int[size];
    }

    /// <summary>Absorbs the symbol after <paramref name="left"/> into it.</summary>
    public void MergeWithNext(int left)
    {
        int right = Next[left];
        Length[left] += Length[right];
        Length[right] = 0;
        Next[left] = Next[right];
        if (Next[right] >= 0) Prev[Next[right]] = left;
    }
}
