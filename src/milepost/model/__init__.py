"""Pure data shared by every layer: normalised batches and profile pieces."""
