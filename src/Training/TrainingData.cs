namespace UioLlm.Training;

/// <summary>
/// Where a training-data stream stands: the pass over the data (<see cref="Epoch"/>) and the next example
/// within it (<see cref="Index"/>; a source may use it for an offset of its own, e.g. a byte offset). Saved in
/// checkpoints, so a resumed run reads exactly the examples an uninterrupted run would have read.
/// </summary>
public readonly record struct TrainingDataPosition(long Epoch, long Index);

/// <summary>
/// The examples a <see cref="Trainer"/> learns from: an endless, deterministic stream of token-id documents.
/// Each example is one document of T*l + 1 tokens (T whole segments of the UIO segment length l plus the
/// final target); an estimator reads its first T*l + 1 tokens and ignores a shorter tail.
/// </summary>
/// <remarks>
/// Setting <see cref="Position"/> to a value read from it earlier must make <see cref="Next"/> return the same
/// examples again, in the same order: that is what makes a resumed run continue exactly. Sources that shuffle
/// should derive the order from a seed and the epoch, not from hidden state.
/// </remarks>
public interface ITrainingData
{
    /// <summary>The next example (a fresh array the trainer may keep); wraps to the next epoch at the end.</summary>
    int[] Next();

    /// <summary>The position of the example <see cref="Next"/> returns next.</summary>
    TrainingDataPosition Position { get; set; }
}

/// <summary>
/// Training data whose documents come with their own targets (e.g. only an answer scored): targets[i] is what
/// tokens[i] must predict, -100 where nothing is scored. The <see cref="Trainer"/> uses
/// <see cref="NextWithTargets"/> instead of <see cref="ITrainingData.Next"/> when the data offers it.
/// </summary>
public interface ITargetedTrainingData : ITrainingData
{
    /// <summary>The next example (advancing <see cref="ITrainingData.Position"/> as Next does) with tokens.Length - 1 targets.</summary>
    (int[] Tokens, int[] Targets) NextWithTargets();
}

/// <summary>
/// A fixed list of examples held in memory, cycled epoch after epoch, optionally in a seeded order that is
/// reshuffled every epoch (the order of an epoch depends only on the seed and the epoch number).
/// </summary>
public sealed class InMemoryTrainingData : ITrainingData
{
    private readonly IReadOnlyList<int[]> examples;
    private readonly int? shuffleSeed;
    private int[] order;
    private TrainingDataPosition position;

    /// <param name="examples">The examples; at least one, none empty.</param>
    /// <param name="shuffleSeed">Null: the list order every epoch. Otherwise a permutation per epoch drawn from this seed.</param>
    public InMemoryTrainingData(IReadOnlyList<int[]> examples, int? shuffleSeed = null)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (examples.Count == 0) throw new ArgumentException("InMemoryTrainingData: no examples given; expected at least one", nameof(examples));
        for (int i = 0; i < examples.Count; i++)
            if (examples[i] is null || examples[i].Length == 0)
                throw new ArgumentException($"InMemoryTrainingData: example {i} is empty; expected token ids", nameof(examples));
        this.examples = examples;
        this.shuffleSeed = shuffleSeed;
        order = OrderOf(0);
    }

    public int Count => examples.Count;

    public TrainingDataPosition Position
    {
        get => position;
        set
        {
            if (value.Epoch < 0 || value.Index < 0 || value.Index >= examples.Count)
                throw new ArgumentOutOfRangeException(nameof(value), value,
                    $"InMemoryTrainingData: position must have epoch >= 0 and 0 <= index < {examples.Count}");
            if (value.Epoch != position.Epoch) order = OrderOf(value.Epoch);
            position = value;
        }
    }

    public int[] Next()
    {
        var example = (int[])examples[order[position.Index]].Clone();
        Position = position.Index + 1 < examples.Count
            ? position with { Index = position.Index + 1 }
            : new TrainingDataPosition(position.Epoch + 1, 0);
        return example;
    }

    /// <summary>The example order of one epoch: identity, or a Fisher-Yates shuffle seeded by (seed, epoch).</summary>
    private int[] OrderOf(long epoch)
    {
        var indices = Enumerable.Range(0, examples.Count).ToArray();
        if (shuffleSeed is int seed) new Random(Seeds.Derive(seed, epoch)).Shuffle(indices);
        return indices;
    }
}
