using OrleansGpt.Training.Model;
using OrleansGpt.Training.Numerics;
using static TorchSharp.torch;

namespace OrleansGpt.Training.Generation;

/// <summary>
/// KV-cache slots for continuous batching: each running request owns one slot (row) and its own length, so
/// requests join and leave between steps without waiting for each other.
/// </summary>
/// <remarks>
/// A decode step runs over rows [0, R), R being one past the highest busy slot; rows that are idle or still
/// prefilling ride along, writing their keys to a scratch position past the capacity and attending to
/// position 0 only, so they cost a little compute but never copy or corrupt another request's cache. Slots
/// are handed out lowest first, which keeps R close to the number of running requests.
/// </remarks>
public sealed class SlotKvCache : IDisposable
{
    private readonly Tensor[] _keys;   // per layer (S, nh, capacity + 1, hs); position `capacity` is scratch
    private readonly Tensor[] _values; // per layer (S, nh, capacity + 1, hs)
    private readonly int[] _lengths;
    private readonly GptConfig _config;

    public SlotKvCache(Gpt model, int slots, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        if (capacity < 1 || capacity > model.Config.BlockSize)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"must be in [1, {model.Config.BlockSize}]");
        _config = model.Config;
        Slots = slots;
        Capacity = capacity;
        Dtype = model.CacheDtype;
        _lengths = new int[slots];
        _keys = new Tensor[_config.Layers];
        _values = new Tensor[_config.Layers];
        for (int i = 0; i < _config.Layers; i++)
        {
            _keys[i] = zeros([slots, _config.Heads, capacity + 1, _config.HeadSize], Dtype, model.Device).DetachFromDisposeScope();
            _values[i] = zeros([slots, _config.Heads, capacity + 1, _config.HeadSize], Dtype, model.Device).DetachFromDisposeScope();
        }
    }

    /// <summary>How many requests can run at once.</summary>
    public int Slots { get; }

    /// <summary>Positions (prompt plus generated tokens) one slot can hold.</summary>
    public int Capacity { get; }

    /// <summary>Element type of keys and values (<see cref="Gpt.CacheDtype"/>).</summary>
    public ScalarType Dtype { get; }

    /// <summary>Positions filled in <paramref name="slot"/>.</summary>
    public int Length(int slot) => _lengths[slot];

    /// <summary>Empties a slot for the next request (its buffers are simply overwritten).</summary>
    public void Release(int slot) => _lengths[slot] = 0;

    /// <summary>
    /// Empties a slot and zeroes its buffers. Release alone leaves the old keys and values in place, and a later
    /// request masks them out; but a masked NaN still poisons attention (its weight is 0, and 0 x NaN is NaN), so a
    /// slot whose request failed, perhaps on non-finite values, is cleared before anyone else uses it.
    /// </summary>
    public void Scrub(int slot)
    {
        _lengths[slot] = 0;
        for (int i = 0; i < _config.Layers; i++)
        {
            using var keys = _keys[i][slot];
            using var values = _values[i][slot];
            keys.zero_();
            values.zero_();
        }
    }

    /// <summary>A cache view that appends a chunk of one slot's prompt.</summary>
    public IKvCache Prefill(int slot) => new PrefillView(this, slot);

    /// <summary>
    /// A cache view that prefills several empty slots at once from right-padded prompts (B = slots.Length, T = the
    /// longest). Positions past a row's own length are padding: their keys land beyond the slot's length, where
    /// the row's decode steps overwrite them, and causal attention keeps real positions from seeing them.
    /// </summary>
    public IKvCache PrefillMany(int[] slots, int[] lengths) => new PrefillManyView(this, slots, lengths);

    /// <summary>A cache view for one decode step over rows [0, rows); only rows marked decoding advance.</summary>
    public IKvCache Decode(int rows, bool[] decoding) => new DecodeView(this, rows, decoding);

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }

    private sealed class PrefillView(SlotKvCache owner, int slot) : IKvCache
    {
        public ScalarType Dtype => owner.Dtype;
        public long Batch => 1;
        public int LengthAfter(long t) => owner._lengths[slot] + (int)t;

        public Tensor Positions(long t, Device device) =>
            arange(owner._lengths[slot], owner._lengths[slot] + t, dtype: ScalarType.Int64, device: device).unsqueeze(0); // (1, t)

        public (Tensor Keys, Tensor Values, Tensor? Mask, bool IsCausal) Append(int layer, Tensor k, Tensor v)
        {
            int past = owner._lengths[slot];
            long t = k.shape[2];
            if (past + t > owner.Capacity)
                throw new InvalidOperationException($"Slot {slot} holds {past} of {owner.Capacity} positions; {t} more do not fit");
            var keys = owner._keys[layer].narrow(0, slot, 1);     // (1, nh, capacity + 1, hs)
            var values = owner._values[layer].narrow(0, slot, 1);
            keys.narrow(2, past, t).copy_(k);
            values.narrow(2, past, t).copy_(v);
            var (mask, causal) = CausalMask.For(past, t, k.device);
            return (keys.narrow(2, 0, past + t), values.narrow(2, 0, past + t), mask, causal);
        }

        public void Advance(int t) => owner._lengths[slot] += t;
    }

    private sealed class PrefillManyView : IKvCache
    {
        private readonly SlotKvCache _owner;
        private readonly int[] _slots;
        private readonly int[] _lengths;
        private Tensor? _index; // (B): the slot of each row

        public PrefillManyView(SlotKvCache owner, int[] slots, int[] lengths)
        {
            foreach (int slot in slots)
                if (owner._lengths[slot] != 0)
                    throw new InvalidOperationException($"Slot {slot} is not empty; only empty slots are prefilled together");
            if (lengths.Max() > owner.Capacity)
                throw new InvalidOperationException($"A prompt of {lengths.Max()} positions does not fit a slot of {owner.Capacity}");
            (_owner, _slots, _lengths) = (owner, slots, lengths);
        }

        public ScalarType Dtype => _owner.Dtype;
        public long Batch => _slots.Length;
        public int LengthAfter(long t) => (int)t;

        public Tensor Positions(long t, Device device) => arange(0, t, dtype: ScalarType.Int64, device: device).unsqueeze(0); // (1, t)

        public (Tensor Keys, Tensor Values, Tensor? Mask, bool IsCausal) Append(int layer, Tensor k, Tensor v)
        {
            long t = k.shape[2];
            k = k.to(_owner.Dtype);
            v = v.to(_owner.Dtype);
            // Lives in the caller's dispose scope, like the decode view's index.
            _index ??= tensor(_slots.Select(s => (long)s).ToArray(), device: k.device);
            _owner._keys[layer].narrow(2, 0, t).index_copy_(0, _index, k);
            _owner._values[layer].narrow(2, 0, t).index_copy_(0, _index, v);
            return (k, v, null, t > 1); // nothing cached before: the new keys are all there is to attend to
        }

        public void Advance(int t)
        {
            for (int i = 0; i < _slots.Length; i++)
                _owner._lengths[_slots[i]] = _lengths[i];
        }
    }

    private sealed class DecodeView : IKvCache
    {
        private readonly SlotKvCache _owner;
        private readonly int _rows;
        private readonly bool[] _decoding;
        private readonly int _attended; // key positions attention reads: the longest decoding row after this step
        private Tensor? _writeRows;     // (R * nh): the row of a layer's buffer, seen as (S * nh * (capacity + 1), hs), each new key goes to
        private Tensor? _mask;          // (R, 1, 1, L): which keys each row sees

        public DecodeView(SlotKvCache owner, int rows, bool[] decoding)
        {
            _owner = owner;
            _rows = rows;
            _decoding = decoding;
            _attended = 1;
            for (int r = 0; r < rows; r++)
                if (decoding[r])
                {
                    if (owner._lengths[r] >= owner.Capacity)
                        throw new InvalidOperationException($"Slot {r} is full ({owner.Capacity} positions)");
                    _attended = Math.Max(_attended, owner._lengths[r] + 1);
                }
        }

        public ScalarType Dtype => _owner.Dtype;
        public long Batch => _rows;
        public int LengthAfter(long t) => _attended;

        public Tensor Positions(long t, Device device) =>
            tensor(Enumerable.Range(0, _rows).Select(r => _decoding[r] ? (long)_owner._lengths[r] : 0L).ToArray(), [_rows, 1L], device: device); // (R, 1)

        public (Tensor Keys, Tensor Values, Tensor? Mask, bool IsCausal) Append(int layer, Tensor k, Tensor v)
        {
            var config = _owner._config;
            long nh = config.Heads, hs = config.HeadSize, positions = _owner.Capacity + 1;
            // The same rows and mask serve every layer of this step; they live in the caller's dispose scope. Each head's
            // new key is one row of hs numbers: index_copy_ moves whole rows, where scatter_ over an index expanded to
            // (R, nh, 1, hs) went element by element (4-5 ms a step at 32 rows for GPT-2 small, 10% of the step).
            _writeRows ??= tensor(Enumerable.Range(0, _rows * (int)nh).Select(i =>
            {
                int r = i / (int)nh, h = i % (int)nh;
                long position = _decoding[r] ? _owner._lengths[r] : _owner.Capacity; // idle rows write to the scratch position
                return ((long)r * nh + h) * positions + position;
            }).ToArray(), device: k.device);
            _mask ??= MakeMask(k.device);
            _owner._keys[layer].view(-1, hs).index_copy_(0, _writeRows, k.to(_owner.Dtype).reshape(-1, hs));   // (R * nh, hs)
            _owner._values[layer].view(-1, hs).index_copy_(0, _writeRows, v.to(_owner.Dtype).reshape(-1, hs));
            var keys = _owner._keys[layer].narrow(0, 0, _rows);   // (R, nh, capacity + 1, hs)
            var values = _owner._values[layer].narrow(0, 0, _rows);
            return (keys.narrow(2, 0, _attended), values.narrow(2, 0, _attended), _mask, false);
        }

        public void Advance(int t)
        {
            for (int r = 0; r < _rows; r++)
                if (_decoding[r])
                    _owner._lengths[r] += t;
        }

        public Tensor? AttendOne(int layer, Tensor qkv)
        {
            if (!DecodeAttention.Applies(qkv, _owner.Dtype, _owner._config.HeadSize))
                return null;
            // Each decoding row writes at its own length and reads only its own positions; idle rows sit out
            // (no scratch write, no mask).
            Span<int> positions = stackalloc int[_rows];
            for (int r = 0; r < _rows; r++)
                positions[r] = _decoding[r] ? _owner._lengths[r] : -1;
            return DecodeAttention.Step(qkv, _owner._keys[layer], _owner._values[layer], positions);
        }

        private Tensor MakeMask(Device device)
        {
            var allowed = new bool[_rows * _attended];
            for (int r = 0; r < _rows; r++)
            {
                int visible = _decoding[r] ? _owner._lengths[r] + 1 : 1; // idle rows see position 0, so softmax stays finite
                for (int j = 0; j < visible; j++) allowed[r * _attended + j] = true;
            }
            return tensor(allowed, [_rows, 1L, 1L, _attended], device: device);
        }
    }
}
