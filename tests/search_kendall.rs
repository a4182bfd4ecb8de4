//! Kendall τ-b on the authors' released CIFAR-10 ResNet-20 numbers
//! (`mehravehj/Balanced-Mixture-of-SuperNets`, `results/resnet20_baselines_mixture.csv`,
//! copied to tests/fixtures/search/): each of the 36 configurations' stand-alone
//! accuracy against its supernet-estimated accuracy with M = 1, 2, 4, 8. The expected
//! τ are those computed independently in `../shared/SEEDS.md` §4.4 (0.143, 0.312,
//! 0.597, 0.530), which the paper's claim (τ rises with M) rests on.

use fnet::search::kendall::tau_b;

fn column(rows: &[Vec<String>], header: &[String], name: &str) -> Vec<f64> {
    let i = header.iter().position(|h| h == name).expect("column");
    rows.iter().map(|r| r[i].parse().expect("number")).collect()
}

#[test]
fn released_cifar10_numbers_give_the_published_tau() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/search/resnet20_baselines_mixture.csv"
    ))
    .unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 36);
    let truth = column(&rows, &header, "baseline_avg");
    let mut got = Vec::new();
    for (m, want) in [(1, 0.143), (2, 0.312), (4, 0.597), (8, 0.530)] {
        let est = column(&rows, &header, &format!("M{m}_avg"));
        let tau = tau_b(&truth, &est).unwrap();
        assert!(
            (tau - want).abs() < 1.5e-3,
            "M = {m}: τ = {tau}, SEEDS.md says {want}"
        );
        got.push(tau);
    }
    // The claim: ranking quality rises from M = 1 to M = 4.
    assert!(got[0] < got[1] && got[1] < got[2], "{got:?}");
}
