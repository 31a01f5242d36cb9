//! A Merkle tree over receipt items, shaped as in RFC 6962 §2.1 (the Certificate
//! Transparency tree): leaves hashed with a 0x00 prefix, inner nodes with 0x01, and an odd
//! node at the end of a level carried up unchanged. That shape has no duplicated nodes, so
//! two different lists of leaves never share a root.

use crate::digest::Digest;

pub fn leaf_hash(bytes: &[u8]) -> Digest {
    Digest::of_parts(&[&[0x00], bytes])
}

pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Digest::of_parts(&[&[0x01], &left.0, &right.0])
}

/// All levels of the tree, leaves first, root last. Empty for no leaves.
fn levels(leaves: &[Digest]) -> Vec<Vec<Digest>> {
    if leaves.is_empty() {
        return Vec::new();
    }
    let mut levels = vec![leaves.to_vec()];
    while levels.last().map_or(0, Vec::len) > 1 {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [odd] => *odd,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
        levels.push(above);
    }
    levels
}

/// The root and one inclusion proof per leaf, in a single pass (O(n) hashes).
pub fn root_and_proofs(leaves: &[Digest]) -> Option<(Digest, Vec<Vec<Digest>>)> {
    let levels = levels(leaves);
    let root = *levels.last()?.first()?;
    let proofs = (0..leaves.len())
        .map(|mut pos| {
            let mut path = Vec::new();
            for level in &levels[..levels.len() - 1] {
                let sibling = pos ^ 1;
                if sibling < level.len() {
                    path.push(level[sibling]);
                }
                pos /= 2;
            }
            path
        })
        .collect();
    Some((root, proofs))
}

/// Recomputes the root from a leaf, its index among `count` leaves and its proof. `None` if
/// the proof has the wrong length for that position.
pub fn root_from_proof(leaf: Digest, index: u32, count: u32, proof: &[Digest]) -> Option<Digest> {
    if count == 0 || index >= count {
        return None;
    }
    let (mut pos, mut size) = (index as u64, count as u64);
    let mut hash = leaf;
    let mut path = proof.iter();
    while size > 1 {
        if pos % 2 == 1 {
            hash = node_hash(path.next()?, &hash);
        } else if pos + 1 < size {
            hash = node_hash(&hash, path.next()?);
        }
        pos /= 2;
        size = size.div_ceil(2);
    }
    if path.next().is_some() {
        return None;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's recursive definition, to check the level-by-level construction against.
    fn mth(leaves: &[Digest]) -> Digest {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = leaves.len().next_power_of_two() / 2;
        node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
    }

    #[test]
    fn matches_rfc6962_and_every_proof_verifies() {
        for n in 1..=70u32 {
            let leaves: Vec<Digest> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let (root, proofs) = root_and_proofs(&leaves).unwrap();
            assert_eq!(root, mth(&leaves), "n={n}");
            for (i, proof) in proofs.iter().enumerate() {
                assert_eq!(root_from_proof(leaves[i], i as u32, n, proof), Some(root));
                // The proof does not fit another position or another leaf.
                if n > 1 {
                    let j = (i as u32 + 1) % n;
                    assert_ne!(root_from_proof(leaves[i], j, n, proof), Some(root));
                    assert_ne!(root_from_proof(leaves[j as usize], i as u32, n, proof), Some(root));
                }
            }
        }
        assert!(root_and_proofs(&[]).is_none());
        assert_eq!(root_from_proof(Digest::ZERO, 0, 0, &[]), None);
        assert_eq!(root_from_proof(Digest::ZERO, 3, 3, &[]), None);
        assert_eq!(root_from_proof(Digest::ZERO, 0, 1, &[Digest::ZERO]), None);
    }
}
