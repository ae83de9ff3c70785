"""Taxonomies of any depth: ranks in the taxonomy, one row per ancestor at
every rank, dropout per rank, guidance from any rank and hierarchical
guidance, with two-tier behaviour unchanged."""
import pytest
import torch

from finediffusion.datasets import HierarchyDataset
from finediffusion.datasets.synthetic import write_synthetic_hierarchy
from finediffusion.models import TieredDiT, TieredGuidance
from finediffusion.taxonomy import Taxonomy, check_same_taxonomy

TINY = dict(arch=dict(depth=1, hidden_size=32, num_heads=2), input_size=8,
            patch_size=2)


@pytest.fixture(scope='module')
def ranked(tmp_path_factory):
    root = tmp_path_factory.mktemp('ranked')
    return write_synthetic_hierarchy(str(root), 'ranked', {'train': 2},
                                     workers=1)['train']


def test_ranked_set_reads_as_three_or_two_tiers(ranked):
    three = HierarchyDataset.read_taxonomy(ranked, ranks=('genus', 'family'))
    from_csv = HierarchyDataset.read_taxonomy(
        ranked, 'annotations.csv', ranks=('genus', 'family'))
    two = HierarchyDataset.read_taxonomy(ranked, 'annotations.csv')
    assert three == from_csv
    assert (len(three.names), len(three.ancestor_names('genus')),
            len(three.super_names)) == (80, 20, 10)
    assert two.ranks == [] and two.names == three.names
    assert two.sub2super == three.sub2super
    # A saved two-tier dict keeps its keys.
    assert set(two.to_dict()) == {'names', 'sub2super', 'super_names',
                                  'common_names'}
    assert Taxonomy.from_dict(three.to_dict()) == three


def test_taxonomy_refuses_a_genus_in_two_families():
    with pytest.raises(ValueError, match="genus 'g' has subclasses in two"):
        Taxonomy(['a', 'b'], [0, 1], ['F', 'G'], ranks=['genus', 'family'],
                 rank_tables=[[0, 0]], rank_names=[['g']])


def test_homonym_genera_are_two_ancestors():
    tax = Taxonomy.from_lineages(['a', 'b'], [('X', 'F'), ('X', 'G')],
                                 ['genus', 'family'])
    assert tax.table('genus') == [0, 1]
    with pytest.raises(ValueError, match='ambiguous'):
        tax.resolve('X')


def test_rank_names_resolve_and_target_rows(ranked):
    tax = HierarchyDataset.read_taxonomy(ranked, ranks=('genus', 'family'))
    genus = tax.ancestor_names('genus')[3]
    members = [s for s, g in enumerate(tax.table('genus')) if g == 3]
    assert tax.resolve(genus) == members
    assert tax.targets(genus) == [(members[0], 'genus')]
    family = tax.super_names[0]
    # A superclass still expands to its subclasses; rank:name draws its row.
    assert len(tax.targets(family)) == 8
    assert tax.targets(f'family:{family}')[0][1] == 'family'
    assert tax.rank_label('genus', members[0]) == f'{genus} (genus row)'
    with pytest.raises(ValueError, match='no genus named'):
        tax.targets('genus:nothing')


def test_class_table_has_a_row_per_ancestor_and_ranks_drop(ranked):
    tax = HierarchyDataset.read_taxonomy(ranked, ranks=('genus', 'family'))
    dit = TieredDiT(tax, null_prob=0.1, super_prob=0.05,
                    rank_probs=dict(genus=0.2), **TINY)
    assert dit.ranks == ['sub', 'genus', 'family', 'null']
    assert dit.class_table.shape[0] == 80 + 20 + 10 + 1
    labels = torch.arange(80)
    genus_rows = dit.y_embedder.rows(labels, 'genus')
    assert genus_rows.tolist() == [80 + g for g in tax.table('genus')]
    assert dit.y_embedder.rows(labels, dit.tier('family')).tolist() == [
        100 + f for f in tax.sub2super]
    # Not saved: two-tier state dicts keep their keys.
    assert 'y_embedder.sub2ancestor' not in dit.state_dict()
    embedder = dit.y_embedder.train()
    torch.manual_seed(0)
    tiers = embedder.token_drop(torch.zeros(200000, dtype=torch.long))
    share = torch.bincount(tiers, minlength=4).float() / len(tiers)
    assert share.tolist() == pytest.approx([0.65, 0.05, 0.1, 0.2], abs=5e-3)


def test_hierarchical_guidance_equals_the_formula(ranked):
    tax = HierarchyDataset.read_taxonomy(ranked, ranks=('genus', 'family'))
    torch.manual_seed(0)
    dit = TieredDiT(tax, null_prob=0.1, **TINY).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(5, 4, 8, 8), torch.full((5, ), 7), torch.arange(5)
    guidance = TieredGuidance('hierarchical',
                              references=('null', 'family', 'genus'),
                              scales=(1.5, 2., 3.))
    with torch.no_grad():
        out = guidance(dit, x, t, y)
        eps = [dit(x, t, y, dit.tier(r)) for r in ('null', 'family',
                                                   'genus', 'sub')]
    expected = eps[0] + 1.5 * (eps[1] - eps[0]) + 2 * (eps[2] - eps[1]) + \
        3 * (eps[3] - eps[2])
    torch.testing.assert_close(out[:, :4], expected[:, :4])
    torch.testing.assert_close(out[:, 4:], eps[3][:, 4:])
    with torch.no_grad():
        genus_ref = TieredGuidance(reference='genus', scale=2.)(dit, x, t, y)
    torch.testing.assert_close(
        genus_ref[:, :4], (eps[2] + 2 * (eps[3] - eps[2]))[:, :4])
    with pytest.raises(ValueError, match='coarse to fine'):
        TieredGuidance(reference='genus')(dit, x, t, y, rank='family')


def test_two_tier_guidance_is_unchanged_bit_for_bit():
    torch.manual_seed(0)
    dit = TieredDiT([0, 0, 1], null_prob=0.1, **TINY).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(3, 4, 8, 8), torch.full((3, ), 3), torch.arange(3)
    with torch.no_grad():
        out = dit.forward_with_cfg(x, t, y, 4.0, 'super')
        both = dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]),
                   torch.cat([torch.zeros_like(y), torch.ones_like(y)]))
    cond, ref = both.chunk(2)
    assert torch.equal(out[:, :4], ref[:, :4] + 4.0 * (cond[:, :4] -
                                                       ref[:, :4]))


def test_rank_tables_are_compared():
    a = Taxonomy.from_lineages(['a', 'b'], [('g1', 'F'), ('g2', 'F')],
                               ['genus', 'family'])
    b = Taxonomy.from_lineages(['a', 'b'], [('g1', 'F'), ('g1', 'F')],
                               ['genus', 'family'])
    with pytest.raises(ValueError, match="belongs to genus 'g2'"):
        check_same_taxonomy(a, b, 'the model', 'the data')
